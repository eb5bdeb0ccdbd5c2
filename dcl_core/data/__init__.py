"""Datasets: sources loaded as uint8 image sets or streams, untrusted uploads (archives, .npz)
checked and stored, and image decoding. Imports nothing itself: the API uses the torch-free
modules of this package to check uploads."""
