"""Frozen encoders scored and used: feature extraction, the linear probe and kNN, a run's
evaluation at the end of training, and embedding a dataset. Imports nothing itself."""
