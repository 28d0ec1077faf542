"""Shared training, evaluation and prediction loops for every command that runs a model."""
