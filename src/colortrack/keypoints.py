"""Keypoint files: colortrack's own JSON format, CSV tracks, BADJA and JHMDB annotations.

The colortrack keypoint format (``colortrack-keypoints/1``) is one JSON object::

    {"format": "colortrack-keypoints/1",
     "names": ["nose", "tail"],
     "skeleton": [[0, 1]],
     "frames": [
      {"frame": 0, "points": [[312.5, 140.0, 1], [401.0, 188.25, 0]]},
      {"frame": 5, "points": [[318.0, 142.5, 1], [405.5, 190.0, 1]]}
     ]}

- ``names``: one non-empty string per point, all different, at least one point.
- ``skeleton`` (may be omitted or empty): pairs ``[i, j]`` of 0-based indices into ``names``,
  drawn as lines.
- ``frames``: at least one entry; ``frame`` is a 0-based frame index of the video (each index at
  most once) and ``points`` holds exactly one ``[x, y, visible]`` per name, in the same order.
  ``x`` (column) and ``y`` (row) are finite numbers in pixels of the video frame at its stored
  resolution; pixel (0, 0) covers [0, 1) x [0, 1). ``visible`` is 0 or 1 (true/false also read).
  A point that is not visible still needs finite coordinates (any value: they are ignored).
- No other keys are allowed, so a misspelt key is an error rather than silently ignored.

An annotation file for tracking is the same format: the entry with the smallest frame index
(usually 0) gives the points to track; later entries are corrections, which replace the tracked
points of their frames and are tracked on. Tracks are written in it too, and as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from colortrack.errors import ColortrackError
from colortrack.io_utils import atomic_write_bytes

FORMAT = "colortrack-keypoints/1"
Frame = tuple[int, np.ndarray, np.ndarray]  # (frame index, xy (N, 2) float32, visible (N,) bool)
Skeleton = tuple[tuple[int, int], ...]

# BADJA annotates 20 of its 37 joint slots: SMALJointInfo.annotated_classes in BADJA's
# code/joint_catalog.py (names from SMALJointCatalog there; 35 is the right ear, 36 the left).
BADJA_JOINT_INDICES: tuple[int, ...] = (
    8, 9, 10, 12, 13, 14, 15, 18, 19, 20, 22, 23, 24, 25, 28, 31, 32, 33, 35, 36
)  # fmt: skip
BADJA_JOINTS: tuple[str, ...] = (
    "upper_right_1", "upper_right_2", "upper_right_3", "upper_left_1", "upper_left_2",
    "upper_left_3", "neck_lower", "lower_right_1", "lower_right_2", "lower_right_3",
    "lower_left_1", "lower_left_2", "lower_left_3", "tail_0", "tail_3", "tail_6", "jaw", "nose",
    "right_ear", "left_ear",
)  # fmt: skip
BADJA_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (3, 4), (4, 5), (7, 8), (8, 9), (10, 11), (11, 12), (6, 0), (6, 3),
    (13, 7), (13, 10), (6, 13), (13, 14), (14, 15), (6, 16), (16, 17), (6, 18), (6, 19),
)  # fmt: skip
BADJA_FULL_SIZE = (1920, 1080)  # BADJA coordinates are [row, col] in DAVIS full resolution

# JHMDB's 15 joints in the order of joint_positions.mat (JHMDB README).
JHMDB_JOINTS: tuple[str, ...] = (
    "neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
    "right_elbow", "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist",
    "right_ankle", "left_ankle",
)  # fmt: skip
JHMDB_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 2), (0, 1), (0, 3), (0, 4), (3, 7), (7, 11), (4, 8), (8, 12),
    (1, 5), (1, 6), (5, 9), (9, 13), (6, 10), (10, 14),
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Keypoints:
    """The points of one frame: names, (N, 2) float32 x/y pixels, (N,) bool visibility."""

    names: tuple[str, ...]
    xy: np.ndarray
    visible: np.ndarray
    skeleton: tuple[tuple[int, int], ...] = ()


class _Invalid(Exception):
    """A problem inside a file, raised with its location and turned into a ColortrackError."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"{where} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Invalid(f"{where} must be finite, got {value}")
    return number


MAX_FRAME = 10**9  # a frame index past any video (a day at 10,000 fps)
MAX_COORDINATE = 1e6  # pixels; keeps points finite in float32 and far beyond any frame


def _load_json(path: Path) -> Any:
    """Parse strictly: NaN/Infinity literals and bad UTF-8 are errors, as are absurd nestings."""
    if not path.is_file():
        raise ColortrackError(f"{path}: keypoint file not found")

    def reject(token: str) -> None:
        raise _Invalid(f"{token} is not allowed in JSON")

    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=reject)
    except _Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ColortrackError(f"{path}: not valid JSON ({error})") from None


def _parse_track(data: Any) -> tuple[tuple[str, ...], Skeleton, list[Frame]]:
    if not isinstance(data, dict):
        raise _Invalid("the top level must be a JSON object")
    if data.get("format") != FORMAT:
        raise _Invalid(f'"format" must be "{FORMAT}", got {data.get("format")!r}')
    unknown = sorted(set(data) - {"format", "names", "skeleton", "frames"})
    if unknown:
        raise _Invalid(f"unknown keys {unknown}")
    names = data.get("names")
    if not isinstance(names, list) or not names:
        raise _Invalid('"names" must be a non-empty list of strings')
    if not all(isinstance(name, str) and name for name in names):
        raise _Invalid('"names" must hold non-empty strings')
    if len(set(names)) != len(names):
        raise _Invalid('"names" must all be different')
    skeleton = data.get("skeleton", [])
    if not isinstance(skeleton, list):
        raise _Invalid('"skeleton" must be a list of [i, j] pairs')
    for k, pair in enumerate(skeleton):
        valid = isinstance(pair, list) and len(pair) == 2 and all(map(_is_int, pair))
        if not valid or not all(0 <= i < len(names) for i in pair):
            raise _Invalid(f"skeleton[{k}] must be a pair of point indices 0..{len(names) - 1}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise _Invalid('"frames" must be a non-empty list')
    parsed = [_parse_frame(entry, k, len(names)) for k, entry in enumerate(frames)]
    indices = [frame for frame, _, _ in parsed]
    if len(set(indices)) != len(indices):
        raise _Invalid("a frame index appears more than once")
    pairs = tuple((int(i), int(j)) for i, j in skeleton)
    return tuple(names), pairs, sorted(parsed, key=lambda entry: entry[0])


def _parse_frame(entry: Any, k: int, count: int) -> Frame:
    where = f"frames[{k}]"
    if not isinstance(entry, dict) or set(entry) != {"frame", "points"}:
        raise _Invalid(f'{where} must be an object with exactly "frame" and "points"')
    if not _is_int(entry["frame"]) or not 0 <= entry["frame"] <= MAX_FRAME:
        raise _Invalid(f"{where}.frame must be a frame index 0..{MAX_FRAME}")
    points = entry["points"]
    if not isinstance(points, list) or len(points) != count:
        raise _Invalid(f"{where}.points must list {count} points, one per name")
    xy = np.zeros((count, 2), dtype=np.float32)
    visible = np.zeros(count, dtype=bool)
    for i, point in enumerate(points):
        spot = f"{where}.points[{i}]"
        if not isinstance(point, list) or len(point) != 3:
            raise _Invalid(f"{spot} must be [x, y, visible]")
        x, y = _number(point[0], f"{spot} x"), _number(point[1], f"{spot} y")
        if max(abs(x), abs(y)) > MAX_COORDINATE:
            raise _Invalid(f"{spot} lies beyond {MAX_COORDINATE:g} pixels")
        xy[i] = x, y
        if point[2] not in (0, 1) or isinstance(point[2], float):
            raise _Invalid(f"{spot} visible must be 0 or 1, got {point[2]!r}")
        visible[i] = bool(point[2])
    return entry["frame"], xy, visible


def read_track_json(path: str | Path) -> tuple[tuple[str, ...], Skeleton, list[Frame]]:
    """Read every frame of a keypoint file: (names, skeleton, frames sorted by frame index)."""
    path = Path(path)
    try:
        return _parse_track(_load_json(path))
    except _Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None


def read_keypoints(path: str | Path) -> tuple[int, Keypoints]:
    """The first annotated frame of a keypoint file (smallest index) and its points."""
    names, skeleton, frames = read_track_json(path)
    frame, xy, visible = frames[0]
    return frame, Keypoints(names, xy, visible, skeleton)


def check_in_image(points: Keypoints, width: int, height: int, path: str | Path) -> None:
    """Visible points must lie in the image ([0, width] x [0, height]); catches wrong scales."""
    x, y = points.xy[:, 0], points.xy[:, 1]
    outside = points.visible & ((x < 0) | (x > width) | (y < 0) | (y > height))
    if outside.any():
        i = int(np.argmax(outside))
        raise ColortrackError(
            f"{path}: visible point {points.names[i]!r} at ({x[i]:g}, {y[i]:g}) lies outside the "
            f"{width}x{height} frame ({int(outside.sum())} points outside)"
        )


def _check_frames(names: Any, skeleton: Any, frames: list[Frame]) -> None:
    for frame, xy, visible in frames:
        if np.shape(xy) != (len(names), 2) or np.shape(visible) != (len(names),):
            raise ValueError(f"frame {frame}: xy must be (N, 2) and visible (N,), N={len(names)}")
        if not np.isfinite(np.asarray(xy, dtype=np.float32)).all():
            raise ValueError(f"frame {frame}: coordinates must be finite float32 values")


def _short(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (keeps files small, exact)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def write_track_json(path: str | Path, names: Any, skeleton: Any, frames: list[Frame]) -> None:
    """Write tracks in the colortrack keypoint format (one frame per line), atomically."""
    _check_frames(names, skeleton, frames)
    pairs = [[int(i), int(j)] for i, j in skeleton]
    head = {"format": FORMAT, "names": list(names), "skeleton": pairs}
    lines = []
    for frame, xy, visible in sorted(frames, key=lambda entry: int(entry[0])):
        points = [[_short(x), _short(y), int(v)] for (x, y), v in zip(xy, visible, strict=True)]
        lines.append(json.dumps({"frame": int(frame), "points": points}))
    text = json.dumps(head)[:-1] + ', "frames": [\n' + ",\n".join(lines) + "\n]}\n"
    try:
        _parse_track(json.loads(text))  # never write a file that read_track_json would refuse
    except _Invalid as error:
        raise ValueError(f"{path}: {error}") from None
    atomic_write_bytes(path, text.encode("utf-8"))


def write_track_csv(path: str | Path, names: Any, frames: list[Frame]) -> None:
    """Write tracks as CSV, one row per point: frame,point,name,x,y,visible; atomically."""
    _check_frames(names, (), frames)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "point", "name", "x", "y", "visible"])
    for frame, xy, visible in sorted(frames, key=lambda entry: int(entry[0])):
        for i, name in enumerate(names):
            x, y = _short(xy[i][0]), _short(xy[i][1])
            writer.writerow([int(frame), i, name, x, y, int(bool(visible[i]))])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _badja_entry(entry: Any, k: int, scale: np.ndarray) -> Frame:
    where = f"entry {k}"
    if not isinstance(entry, dict):
        raise _Invalid(f"{where} must be an object")
    image_path, joints, visibility = (entry.get(k) for k in ("image_path", "joints", "visibility"))
    match = re.search(r"(\d+)\.\w+$", image_path) if isinstance(image_path, str) else None
    if match is None:
        raise _Invalid(f"{where}: image_path must name a numbered frame, got {image_path!r}")
    if not isinstance(joints, list) or len(joints) != 37:
        raise _Invalid(f"{where}: joints must list 37 [row, col] pairs")
    if not isinstance(visibility, list) or len(visibility) != 37:
        raise _Invalid(f"{where}: visibility must list 37 flags")
    xy = np.zeros((len(BADJA_JOINT_INDICES), 2), dtype=np.float32)
    visible = np.zeros(len(BADJA_JOINT_INDICES), dtype=bool)
    for i, joint in enumerate(BADJA_JOINT_INDICES):
        pair, flag = joints[joint], visibility[joint]
        if not isinstance(pair, list) or len(pair) != 2:
            raise _Invalid(f"{where}: joints[{joint}] must be [row, col]")
        row, col = (_number(v, f"{where}: joints[{joint}]") for v in pair)
        if flag not in (0, 1) or isinstance(flag, float):
            raise _Invalid(f"{where}: visibility[{joint}] must be true or false")
        xy[i] = col * scale[0], row * scale[1]
        visible[i] = bool(flag)
    if not np.isfinite(xy).all():
        raise _Invalid(f"{where}: joint coordinates are too large")
    return int(match.group(1)), xy, visible


def read_badja(path: str | Path, image_size: tuple[int, int] = (854, 480)) -> list[Frame]:
    """BADJA joints of one sequence as (frame, xy (20, 2) x/y at `image_size`, visible (20,)).

    BADJA stores [row, col] at 1920x1080; they are scaled to `image_size` (width, height).
    """
    path = Path(path)
    scale = np.array(image_size, dtype=np.float64) / np.array(BADJA_FULL_SIZE)
    data = _load_json(path)
    try:
        if not isinstance(data, list) or not data:
            raise _Invalid("must be a non-empty list of annotated frames")
        frames = sorted((_badja_entry(e, k, scale) for k, e in enumerate(data)), key=lambda f: f[0])
        if len({frame for frame, _, _ in frames}) != len(frames):
            raise _Invalid("a frame is annotated more than once")
    except _Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None
    return frames


def jhmdb_positions(mat: Any, path: str | Path) -> np.ndarray:
    """Validate a loaded joint_positions.mat and return (T, 15, 2) float32 0-based x/y."""
    positions = mat.get("pos_img") if isinstance(mat, dict) else None
    if not isinstance(positions, np.ndarray):
        raise ColortrackError(f"{path}: no pos_img array (is this a JHMDB joint_positions.mat?)")
    if positions.ndim != 3 or positions.shape[:2] != (2, 15) or positions.shape[2] < 1:
        raise ColortrackError(f"{path}: pos_img must be 2 x 15 x frames, got {positions.shape}")
    if positions.dtype.kind not in "iuf":
        raise ColortrackError(f"{path}: pos_img must hold real numbers, got {positions.dtype}")
    xy = np.transpose(positions, (2, 1, 0)).astype(np.float64) - 1.0  # MATLAB pixels are 1-based
    if not np.isfinite(xy).all() or np.abs(xy).max() > 1e6:
        raise ColortrackError(f"{path}: pos_img holds non-finite or absurd coordinates")
    return xy.astype(np.float32)


def read_jhmdb(path: str | Path) -> np.ndarray:
    """JHMDB joint_positions.mat -> (T, 15, 2) float32 x/y, 0-based pixels (JHMDB_JOINTS order)."""
    path = Path(path)
    if not path.is_file():
        raise ColortrackError(f"{path}: JHMDB joint file not found")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises many types on damaged files; all mean "unreadable"
        message = f"{path}: cannot read MATLAB file ({type(error).__name__}: {error})"
        raise ColortrackError(message) from None
    return jhmdb_positions(mat, path)
