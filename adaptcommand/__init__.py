"""AdaptCommand: per-user LoRA adapters against a unified adapter for a small smart-home chat model.

The library the stage scripts in scripts/ share, in three layers that data flows through one way:
`adaptcommand.data` (the dataset, cleaning, splits, demo data) -> `adaptcommand.model` (configs,
models, prompts, generation, adapters, training) -> `adaptcommand.evaluation` (metrics, arms,
tables, statistics, plots). A module imports only from its own layer or the layers before it.
"""
