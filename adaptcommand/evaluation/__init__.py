"""Metrics, the arms and their models, the per-persona tables, the study's statistics and plots."""
