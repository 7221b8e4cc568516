"""Workflows built on the public pieces (capture, encode, CircuitLasso, the runtime)."""
