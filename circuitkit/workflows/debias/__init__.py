"""SHIFT-style debiasing as a workflow over capture, encode, CircuitLasso and the runtime."""
