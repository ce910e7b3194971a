"""The DAVIS dataset layout, and scoring a folder of predicted masks against it.

Layout (DAVIS-2016 and DAVIS-2017 alike)::

    root/JPEGImages/<resolution>/<sequence>/00000.jpg ...
    root/Annotations/<resolution>/<sequence>/00000.png ...
    root/ImageSets/2017/val.txt        (DAVIS-2017; DAVIS-2016 keeps ImageSets/val.txt)

DAVIS-2016 masks are binary 0/255 PNGs (one object), DAVIS-2017 masks are palette PNGs of object
ids; ``colortrack.data.annotations.read_mask`` turns both into id maps. Predictions are laid out as
``predictions/<sequence>/<frame>.png``, one per annotation and with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from colortrack.data.annotations import read_mask
from colortrack.errors import ColortrackError
from colortrack.eval.metrics import VOID_ID, SequenceScores, evaluate_sequence

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _read_sequence_list(path: Path) -> list[str]:
    """Sequence names of an ImageSets list, in order and without repeats.

    Lines are either a sequence name (DAVIS-2017, and the DAVIS-2016 ``val.txt`` of this layout)
    or image/annotation path pairs (``/JPEGImages/480p/bear/00000.jpg ...``, the original
    DAVIS-2016 lists), whose sequence is the folder of the first path.
    """
    names: dict[str, None] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ColortrackError(f"{path}: cannot read the sequence list ({error})") from None
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        first = fields[0].strip("/")
        names[Path(first).parent.name if "/" in first else first] = None
    return list(names)


class DavisDataset:
    """Frames and ground-truth masks of a DAVIS-style dataset at one resolution.

    The sequences are ``sequences`` when given, else the validation list of ``ImageSets``
    (``2017/val.txt``, then ``val.txt``, then ``<resolution>/val.txt``, then any other
    ``val.txt``), else every sequence folder of the annotations. Each must have an annotation
    folder; frames are only needed by ``frame_paths``.
    """

    def __init__(
        self, root: Path | str, resolution: str = "480p", sequences: list[str] | None = None
    ) -> None:
        self.root = Path(root)
        self.resolution = resolution
        if not self.root.is_dir():
            raise ColortrackError(f"{self.root}: DAVIS root folder not found")
        self.annotation_dir = self.root / "Annotations" / resolution
        self.image_dir = self.root / "JPEGImages" / resolution
        if not self.annotation_dir.is_dir():
            raise ColortrackError(f"{self.annotation_dir}: annotation folder not found")
        if sequences is None:
            sequences = self._default_sequences()
        for name in sequences:
            if not (self.annotation_dir / name).is_dir():
                raise ColortrackError(f"{self.annotation_dir / name}: sequence folder not found")
        if not sequences:
            raise ColortrackError(f"{self.annotation_dir}: no sequence to evaluate")
        self._sequences = list(sequences)

    def _default_sequences(self) -> list[str]:
        image_sets = self.root / "ImageSets"
        names = ("2017/val.txt", "val.txt", f"{self.resolution}/val.txt")
        preferred = [image_sets / name for name in names]
        others = sorted(image_sets.rglob("val.txt")) if image_sets.is_dir() else []
        for path in preferred + others:
            if path.is_file():
                return _read_sequence_list(path)
        return sorted(p.name for p in self.annotation_dir.iterdir() if p.is_dir())

    @property
    def sequences(self) -> list[str]:
        return list(self._sequences)

    def _files(self, folder: Path, pattern: str, what: str) -> list[Path]:
        if not folder.is_dir():
            raise ColortrackError(f"{folder}: {what} folder not found")
        files = sorted(folder.glob(pattern))
        if not files:
            raise ColortrackError(f"{folder}: no {what} files ({pattern})")
        return files

    def frame_paths(self, sequence: str) -> list[Path]:
        """The sequence's JPEG frames, in order."""
        return self._files(self.image_dir / sequence, "*.jpg", "frame")

    def mask_paths(self, sequence: str) -> list[Path]:
        """The sequence's annotation PNGs, in order (only the first one for test sets)."""
        return self._files(self.annotation_dir / sequence, "*.png", "annotation")

    def first_mask(self, sequence: str) -> np.ndarray:
        """The (H, W) uint8 object ids of the first annotation: what a tracker is given."""
        return read_mask(self.mask_paths(sequence)[0])

    def masks(self, sequence: str) -> np.ndarray:
        """All annotations of a sequence as (T, H, W) uint8 object ids."""
        paths = self.mask_paths(sequence)
        first = read_mask(paths[0])
        stack = np.empty((len(paths), *first.shape), dtype=np.uint8)
        stack[0] = first
        for index, path in enumerate(paths[1:], start=1):
            stack[index] = _read_same_size(path, first.shape, paths[0])
        return stack


def _read_same_size(path: Path, shape: tuple[int, ...], reference: Path) -> np.ndarray:
    ids = read_mask(path)
    if ids.shape != shape:
        raise ColortrackError(
            f"{path}: mask is {ids.shape[1]}x{ids.shape[0]} but {reference} is "
            f"{shape[1]}x{shape[0]} (width x height)"
        )
    return ids


@dataclass(frozen=True)
class ObjectResult:
    """Summary of one object: (mean, recall, decay) of J and of F, as fractions."""

    name: str
    sequence: str
    j: tuple[float, float, float]
    f: tuple[float, float, float]


@dataclass(frozen=True)
class DavisReport:
    """Scores of a DAVIS evaluation: per-frame J and F of every object of every sequence."""

    scores: dict[str, SequenceScores]

    @property
    def objects(self) -> list[ObjectResult]:
        """One result per object, named ``<seq>`` (single object) or ``<seq>_<id>`` (official)."""
        results = []
        for sequence, scores in self.scores.items():
            stats = zip(scores.j_statistics(), scores.f_statistics(), strict=True)
            for index, (j, f) in enumerate(stats, start=1):
                name = sequence if scores.num_objects == 1 else f"{sequence}_{index}"
                results.append(ObjectResult(name, sequence, j, f))
        return results

    def global_scores(self) -> dict[str, float]:
        """The official global numbers (fractions): each statistic averaged over all objects."""
        objects = self.objects
        j = np.mean([o.j for o in objects], axis=0)
        f = np.mean([o.f for o in objects], axis=0)
        values = [(j[0] + f[0]) / 2, *j, *f]
        return {name: float(v) for name, v in zip(GLOBAL_COLUMNS, values, strict=True)}

    def format_table(self) -> str:
        """A text table: the global row, then one row per object, in percent as the JSON, `demo`
        and `analyze` give scores (the official code prints the same numbers as fractions)."""
        rows = [("Global", *self.global_scores().values())]
        rows += [(o.name, (o.j[0] + o.f[0]) / 2, *o.j, *o.f) for o in self.objects]
        width = max(len("Sequence"), *(len(row[0]) for row in rows))
        lines = [f"{'Sequence':<{width}}" + "".join(f"  {c:>8}" for c in GLOBAL_COLUMNS)]
        for name, *values in rows:
            lines.append(f"{name:<{width}}" + "".join(f"  {100 * v:>8.1f}" for v in values))
        lines.append("(percent, 0-100; the official DAVIS toolkit prints these as 0-1)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Global and per-sequence scores in percent; a sequence's are means over its objects."""
        scores = {key: 100.0 * value for key, value in self.global_scores().items()}
        objects = self.objects
        sequences = {}
        for sequence in self.scores:
            members = [o for o in objects if o.sequence == sequence]
            j = 100.0 * float(np.mean([o.j[0] for o in members]))
            f = 100.0 * float(np.mean([o.f[0] for o in members]))
            sequences[sequence] = {"J": j, "F": f, "J&F": (j + f) / 2}
        return {
            "J&F": scores["J&F-Mean"],
            "J": scores["J-Mean"],
            "F": scores["F-Mean"],
            "J-Recall": scores["J-Recall"],
            "J-Decay": scores["J-Decay"],
            "F-Recall": scores["F-Recall"],
            "F-Decay": scores["F-Decay"],
            "sequences": sequences,
        }


def evaluate_davis(
    root: Path | str,
    predictions: Path | str,
    sequences: list[str] | None = None,
    resolution: str = "480p",
) -> DavisReport:
    """Score ``predictions/<seq>/<frame>.png`` against a DAVIS dataset (semi-supervised protocol).

    Like the official code, only the scored frames (all but the first and the last) are read,
    a prediction of another size than its annotation is an error (resize before saving), and so
    is an object id the first annotation does not have.
    """
    dataset = DavisDataset(root, resolution, sequences)
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise ColortrackError(f"{predictions}: predictions folder not found")
    scores = {}
    for sequence in dataset.sequences:
        paths = dataset.mask_paths(sequence)
        gt = dataset.masks(sequence)
        if len(paths) < 3:
            raise ColortrackError(
                f"{dataset.annotation_dir / sequence}: {len(paths)} annotation(s); "
                "scoring needs at least 3"
            )
        num_objects = int(gt[0][gt[0] != VOID_ID].max(initial=0))
        pred = np.zeros_like(gt)
        for index, gt_path in enumerate(paths[1:-1], start=1):
            path = predictions / sequence / gt_path.name
            if not path.is_file():
                raise ColortrackError(f"{path}: prediction not found")
            pred[index] = _read_same_size(path, gt.shape[1:], gt_path)
            if pred[index].max() > num_objects:
                raise ColortrackError(
                    f"{path}: object id {pred[index].max()} but {paths[0]} has "
                    f"{num_objects} object(s)"
                )
        scores[sequence] = evaluate_sequence(gt, pred)
    return DavisReport(scores)
