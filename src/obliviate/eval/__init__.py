"""Evaluation: concept benchmarks, detectors and the M-Score."""
