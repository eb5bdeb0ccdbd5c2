"""Experiments over many runs: sweeps (a grid of pretrain jobs), their table and their plot.
Imports nothing itself."""
