"""The runtime: compiled models, losses, optimizers, data sets and weights files."""
