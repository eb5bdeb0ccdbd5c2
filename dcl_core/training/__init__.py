"""Pretraining: the loop (`train.fit`), the losses and the method registry (`methods`,
torch-free), SimCLR views, optimisers, checkpoints and devices. Imports nothing itself."""
