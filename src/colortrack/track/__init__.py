"""Tracking: propagating masks and points through a video with a model or a baseline."""
