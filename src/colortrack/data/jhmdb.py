"""JHMDB human-joint annotations (Jhuang et al., ICCV 2013): joint files, clips, test lists.

Each clip is a folder of frames with a joint_positions.mat of 15 joints per frame, 1-based
MATLAB pixels; `read_jhmdb` returns them 0-based, and `jhmdb_clips` pairs files with frames.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from colortrack.data.files import reason, shown
from colortrack.errors import ColortrackError

log = logging.getLogger(__name__)

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

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FILE_SUFFIXES = (*_IMAGE_SUFFIXES, ".mat", ".avi", ".mp4")


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


def jhmdb_clips(root: Path, wanted: list[str] | None = None) -> dict[str, tuple[Path, list[Path]]]:
    """Every clip under ROOT as name -> (joint_positions.mat, sorted frame paths).

    A clip's frames are the folder named like the mat's folder anywhere under ROOT (the official
    Rename_Images/<action>/<clip>/ beside joint_positions/<action>/<clip>/), else the frames
    folder beside the mat; of several, the one with a frame per annotated frame. The clip is
    named after that folder. Hidden folders (the archive's macOS .AppleDouble copies) are
    ignored; a clip without frames is skipped with a warning.
    """
    if not root.is_dir():
        raise ColortrackError(f"{root}: JHMDB folder not found")
    mats, frame_dirs = [], {}
    seen = {os.path.realpath(root)}  # followed links may loop back: walk each real folder once
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = {d: os.path.realpath(os.path.join(folder, d)) for d in subfolders
                if not d.startswith(".")}
        subfolders[:] = [d for d, path in real.items() if path not in seen]
        seen.update(real.values())
        images = sorted(n for n in names if n.lower().endswith(_IMAGE_SUFFIXES) and shown(Path(n)))
        if images:
            frame_dirs[Path(folder)] = [Path(folder, n) for n in images]
        if "joint_positions.mat" in names:
            mats.append(Path(folder, "joint_positions.mat"))
    by_name = defaultdict(list)
    for folder in frame_dirs:
        by_name[folder.name].append(folder)
    clips: dict[str, tuple[Path, list[Path]]] = {}
    for mat in sorted(mats):
        candidates = by_name[mat.parent.name] or [d for d in frame_dirs if d.parent == mat.parent]
        if len(candidates) > 1:  # an example image folder beside the clip, say
            length = len(read_jhmdb(mat))
            candidates = [d for d in candidates if len(frame_dirs[d]) == length] or candidates
        if len(candidates) != 1:
            if wanted is None or mat.parent.name in wanted:
                log.warning(
                    "%s: %s frames folder named %s or beside it; skipped",
                    mat, "more than one" if candidates else "no", mat.parent.name,
                )  # fmt: skip
            continue
        name = candidates[0].name
        if name in clips:
            raise ColortrackError(f"{mat}: clip {name} is also annotated by {clips[name][0]}")
        clips[name] = (mat, frame_dirs[candidates[0]])
    missing = sorted(set(wanted or ()) - set(clips))
    if missing:
        raise ColortrackError(f"{root}: no JHMDB clip with frames named {', '.join(missing)}")
    if not clips:
        raise ColortrackError(f"{root}: no JHMDB clip (joint_positions.mat with frames) found")
    return {name: clips[name] for name in wanted} if wanted else clips


def read_split(path: str | Path) -> list[str]:
    """Clip names from a UVC/CRW-style test list, such as CRW's JHMDB split-1 list.

    One clip per line, e.g. ``JHMDB/Rename_Images/jump/<clip> JHMDB/joint_positions/jump/<clip>/
    joint_positions.mat``: the first path on the line names the clip by its last component that
    is not a file name (.mat, .png, .jpg, .avi, ...), so a bare clip name, a frames folder or a
    joint_positions.mat path all work. Blank lines and lines starting with # are skipped.
    (JHMDB's own per-action split files, "<clip>.avi 1|2", are not this format.)
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ColortrackError(f"{path}: cannot read the clip list ({reason(error)})") from None
    names = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p for p in re.split(r"[/\\]", line.split()[0]) if p and p != "."]
        folders = [p for p in parts if not p.lower().endswith(_FILE_SUFFIXES)]
        if not folders:
            raise ColortrackError(f"{path}: line {number} names no clip folder: {line.strip()!r}")
        names.append(folders[-1])
    if not names:
        raise ColortrackError(f"{path}: the clip list is empty")
    return list(dict.fromkeys(names))
