"""Experiments: `python -m experiments.run --flagfile=experiments/flagfiles/NAME.flags`."""
