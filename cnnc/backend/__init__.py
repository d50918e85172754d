"""Backends: lower a typed graph to kernels and run it. A backend sees the graph and the op registry only."""
