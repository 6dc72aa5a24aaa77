"""Experiment configs (ml_collections): `python -m sg2jax.main --config experiments/X.py`."""
