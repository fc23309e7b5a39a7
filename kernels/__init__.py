"""Compiled kernels: arrays and scalars in, counts out. No I/O, no Python objects."""
