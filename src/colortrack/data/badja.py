"""BADJA animal-joint annotations (Biggs et al., ACCV 2018): reading its files and folder.

BADJA annotates joints of animals on DAVIS frames, as [row, col] at DAVIS's full resolution;
`read_badja` returns them as colortrack keypoints at the frames' size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from colortrack.data.keypoints import Frame, Invalid, finite_number, load_json
from colortrack.errors import ColortrackError

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


def _badja_entry(entry: Any, k: int, scale: np.ndarray) -> Frame:
    where = f"entry {k}"
    if not isinstance(entry, dict):
        raise Invalid(f"{where} must be an object")
    image_path, joints, visibility = (entry.get(k) for k in ("image_path", "joints", "visibility"))
    match = re.search(r"(\d+)\.\w+$", image_path) if isinstance(image_path, str) else None
    if match is None:
        raise Invalid(f"{where}: image_path must name a numbered frame, got {image_path!r}")
    if not isinstance(joints, list) or len(joints) != 37:
        raise Invalid(f"{where}: joints must list 37 [row, col] pairs")
    if not isinstance(visibility, list) or len(visibility) != 37:
        raise Invalid(f"{where}: visibility must list 37 flags")
    xy = np.zeros((len(BADJA_JOINT_INDICES), 2), dtype=np.float32)
    visible = np.zeros(len(BADJA_JOINT_INDICES), dtype=bool)
    for i, joint in enumerate(BADJA_JOINT_INDICES):
        pair, flag = joints[joint], visibility[joint]
        if not isinstance(pair, list) or len(pair) != 2:
            raise Invalid(f"{where}: joints[{joint}] must be [row, col]")
        row, col = (finite_number(v, f"{where}: joints[{joint}]") for v in pair)
        if flag not in (0, 1) or isinstance(flag, float):
            raise Invalid(f"{where}: visibility[{joint}] must be true or false")
        xy[i] = col * scale[0], row * scale[1]
        visible[i] = bool(flag)
    if not np.isfinite(xy).all():
        raise Invalid(f"{where}: joint coordinates are too large")
    return int(match.group(1)), xy, visible


def read_badja(path: str | Path, image_size: tuple[int, int] = (854, 480)) -> list[Frame]:
    """BADJA joints of one sequence as (frame, xy (20, 2) x/y at `image_size`, visible (20,)).

    BADJA stores [row, col] at 1920x1080; they are scaled to `image_size` (width, height).
    """
    path = Path(path)
    scale = np.array(image_size, dtype=np.float64) / np.array(BADJA_FULL_SIZE)
    data = load_json(path)
    try:
        if not isinstance(data, list) or not data:
            raise Invalid("must be a non-empty list of annotated frames")
        frames = sorted((_badja_entry(e, k, scale) for k, e in enumerate(data)), key=lambda f: f[0])
        if len({frame for frame, _, _ in frames}) != len(frames):
            raise Invalid("a frame is annotated more than once")
    except Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None
    return frames


def badja_files(root: Path, sequences: list[str] | None) -> dict[str, Path]:
    """BADJA annotation files by sequence name, from ROOT/joint_annotations/ or ROOT itself."""
    folder = root / "joint_annotations" if (root / "joint_annotations").is_dir() else root
    if not folder.is_dir():
        raise ColortrackError(f"{root}: BADJA folder not found")
    files = {p.stem: p for p in sorted(folder.glob("*.json"))}
    missing = sorted(set(sequences or ()) - set(files))
    if missing:
        raise ColortrackError(f"{folder}: no annotations for {', '.join(missing)}")
    if not files:
        raise ColortrackError(f"{folder}: no BADJA .json annotation files")
    return {name: files[name] for name in sequences} if sequences else files
