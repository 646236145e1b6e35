"""Configs, model loading, the one prompt builder, batched generation, adapters and training."""
