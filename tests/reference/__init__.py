"""Slow, obviously correct plain-Python references for the compiled kernels (tests only)."""
from .matcher import ReferenceEngine, Result

__all__ = ["ReferenceEngine", "Result"]
