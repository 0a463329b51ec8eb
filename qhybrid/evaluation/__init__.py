"""Evaluation: the gradability validator and the fundus feature encoder (inference), distribution
metrics with intervals, and the one function that computes every figure of a comparison."""
