"""Pictures of tracking results: masks blended over frames, keypoint skeletons, GIF previews.

Colors come from the DAVIS palette so an overlay matches the palette PNGs written beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from colortrack.data.annotations import DAVIS_PALETTE
from colortrack.data.files import atomic_path


def _color(index: int) -> tuple[int, int, int]:
    """Palette color of object `index` >= 1, cycling past 255 (entry 0 is the black background)."""
    r, g, b = DAVIS_PALETTE[(index - 1) % 255 + 1].tolist()
    return int(r), int(g), int(b)


def overlay_mask(
    frame: np.ndarray, ids: np.ndarray, *, alpha: float = 0.5, contour: int = 2
) -> np.ndarray:
    """Blend each object's palette color over `frame` and outline it (`contour` px, 0 = none)."""
    if frame.shape[:2] != ids.shape:
        raise ValueError(f"frame {frame.shape[:2]} and mask {ids.shape} differ in size")
    out = frame.copy()
    rows, cols = np.flatnonzero(ids.any(1)), np.flatnonzero(ids.any(0))
    if rows.size == 0:
        return out
    # Work in the objects' bounding box: boolean indexing costs per pixel of the whole frame.
    y, x = rows[0], cols[0]
    box = (slice(y, rows[-1] + 1), slice(x, cols[-1] + 1))
    labels, region = ids[box], out[box]
    present = (np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[1:]) + 1).tolist()
    levels = np.arange(256, dtype=np.float32)[:, None] * (1.0 - alpha)
    for value in present:  # a per-byte table for each object's blend: 2.5x the arithmetic's speed
        color = DAVIS_PALETTE[value].astype(np.float32) * alpha
        table = np.clip(levels + color + 0.5, 0, 255).astype(np.uint8)[:, None]  # (256, 1, 3)
        np.copyto(region, cv2.LUT(region, table), where=(labels == value)[..., None])
    if contour > 0:
        for value in present:
            binary = (labels == value).astype(np.uint8)
            contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(int(x), int(y)))
            cv2.drawContours(out, contours, -1, _color(value), contour, lineType=cv2.LINE_AA)
    return out


def draw_points(
    frame: np.ndarray,
    xy: np.ndarray,
    visible: np.ndarray,
    skeleton: Sequence[tuple[int, int]] = (),
    *,
    radius: int = 4,
) -> np.ndarray:
    """Draw visible keypoints (one palette color each) and the skeleton bones joining them."""
    out = np.ascontiguousarray(frame.copy())
    points = [(round(float(x)), round(float(y))) for x, y in np.asarray(xy).reshape(-1, 2)]
    shown = np.asarray(visible, dtype=bool).reshape(-1)
    thickness = max(1, radius // 2)
    for a, b in skeleton:
        if shown[a] and shown[b]:
            cv2.line(out, points[a], points[b], (255, 255, 255), thickness, cv2.LINE_AA)
    for index, (point, seen) in enumerate(zip(points, shown, strict=True)):
        if seen:
            cv2.circle(out, point, radius, _color(index + 1), -1, cv2.LINE_AA)
            cv2.circle(out, point, radius, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_gif(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> None:
    """Write RGB frames as a looping GIF, atomically (small previews for READMEs and reports)."""
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    if not images:
        raise ValueError("write_gif needs at least one frame")
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(20, round(1000.0 / fps)),
            loop=0,
        )
