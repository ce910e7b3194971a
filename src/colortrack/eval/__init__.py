"""Evaluation: DAVIS J&F and keypoint PCK, the benchmark commands, and analysis reports."""
