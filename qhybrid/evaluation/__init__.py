"""Evaluation: the gradability validator and the fundus feature encoder (inference), distribution
metrics with intervals, and the one function that computes every figure of a comparison."""

from qhybrid.evaluation.evaluate import evaluate_sets
from qhybrid.evaluation.features import FundusEncoder
from qhybrid.evaluation.validator import GradabilityNet

__all__ = ["FundusEncoder", "GradabilityNet", "evaluate_sets"]
