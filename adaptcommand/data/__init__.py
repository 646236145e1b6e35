"""The dataset: its schema, files, cleaning, the documented split format and the demo generator."""
