"""Differentiable ops: each a Function with forward and backward side by side."""
