"""Declarative inputs: recipes and target descriptors (no TVM)."""
