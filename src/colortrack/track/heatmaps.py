"""Keypoints as labels: each point becomes a Gaussian heatmap that propagates like a mask, and
propagated heatmaps are decoded back to points (the CRW / DINO protocol)."""

from __future__ import annotations

import numpy as np


def heatmaps(
    xy: np.ndarray, visible: np.ndarray, shape: tuple[int, int], sigma: float
) -> np.ndarray:
    """(N+1, H, W) labels: channel 0 background, then one Gaussian (peak 1) per visible point."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    gx = np.exp(-((np.arange(shape[1], dtype=np.float32) - xy[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((np.arange(shape[0], dtype=np.float32) - xy[:, 1:]) ** 2) / (2 * sigma**2))
    maps = gy[:, :, None] * gx[:, None, :] * np.asarray(visible, dtype=np.float32)[:, None, None]
    background = 1.0 - maps.max(axis=0, initial=0.0)
    return np.concatenate([background[None], maps]).astype(np.float32)


def decode_heatmaps(
    labels: np.ndarray, threshold: float, *, fallback: np.ndarray, top: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Point locations as the heat-weighted mean of each map's `top` hottest pixels (CRW).

    The hottest pixels lie in the `top` rows with the highest maxima, so only those rows are
    searched (argpartition over whole maps is slow on their many equal zeros). A point whose
    map is empty keeps its `fallback` position; visibility is peak > threshold.
    """
    maps = labels[1:]
    n, h, w = maps.shape
    row_max = maps.max(axis=2)
    rows = np.argpartition(row_max, -min(top, h), axis=1)[:, -min(top, h) :]
    candidates = np.take_along_axis(maps, rows[:, :, None], axis=1).reshape(n, -1)
    best = np.argpartition(candidates, -top, axis=1)[:, -top:]
    weights = np.clip(np.take_along_axis(candidates, best, axis=1), 0.0, None)
    total = weights.sum(axis=1)
    weights = weights / np.where(total > 0, total, 1.0)[:, None]
    x = (weights * (best % w)).sum(axis=1)
    y = (weights * np.take_along_axis(rows, best // w, axis=1)).sum(axis=1)
    xy = np.where((total > 0)[:, None], np.stack([x, y], axis=1), fallback).astype(np.float32)
    return xy, row_max.max(axis=1) > threshold
