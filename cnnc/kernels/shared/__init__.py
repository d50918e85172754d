"""Numerics shared by the targets: plain Python functions over scalars and arrays, compiled by each
target as its device function (see cnnc.kernels.source). Read as text, never imported."""
