"""Networks: the encoder registry (`encoders`, torch-free: the config validates names with it),
the encoders it builds and the projection head. Imports nothing itself."""
