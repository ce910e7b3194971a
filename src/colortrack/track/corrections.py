"""Corrections in both directions: labels given at several frames, copied forwards and backwards.

Frames whose labels are given (frame 0 and a user's corrections) cut the video into segments.
Inside a segment [s, e], labels are copied forwards from s and backwards from e, each run with
its own given frame as the first reference, as the paper's copy uses frame 0, then merged by
distance: frame t takes (e - t) / (e - s) of the forward copy and the rest of the backward one,
so each given frame rules its neighbours. After the last given frame, labels go forwards only.
(Frame 0 as a long-term reference of every run fights a correction that adds an object present
but unlabelled at frame 0; the nearest given frame is the one that knows.)

A run depends on its own given frame's mask and on nothing else, so a new correction at k in
[s, e] leaves the forward run from s and the backward run from e valid up to k: only the runs
from k are new (`Corrections`, which the app and the corrections benchmark use). Embeddings
are computed once, in video order, whichever way labels are copied.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colortrack.bounds import available_memory
from colortrack.errors import ColortrackError
from colortrack.track.protocol import LabelPropagator


class PastEnd(ColortrackError):
    """Labels given for a frame the video does not have (found when the video ends: a
    container's frame count is only an estimate)."""

    def __init__(self, index: int, length: int) -> None:
        super().__init__(f"labels are given for frame {index}, but the video has {length} "
                         "frames")
        self.index, self.length = index, length


def merge(forward: Any, backward: Any, t: int, start: int, end: int) -> Any:
    """Frame t's labels from the copies forwards from `start` and backwards from `end`."""
    weight = (end - t) / (end - start)
    return forward * weight + backward * (1 - weight)


# A copied label counts as certain where its winner leads the runner-up by this much.
MARGIN = 0.5
# Locations where the objects hold at least 1 - OBJECT of the labels: what confidence covers.
OBJECT = 0.9


def confidence(cells: Any) -> float:
    """How sure the copy is of a frame, in [0, 1]: the share of the locations that any object
    claims where one label clearly wins. Soft labels blur where references disagree or match
    poorly; an object the copy lost entirely scores 0."""
    soft = cells.float().cpu().numpy() if isinstance(cells, torch.Tensor) else np.asarray(cells)
    claimed = soft[0] < OBJECT
    if not claimed.any():
        return 0.0
    top = np.sort(soft[:, claimed], axis=0)
    return float(np.mean(top[-1] - top[-2] >= MARGIN))


class Spill:
    """A list of arrays in memory up to `budget` bytes (default: 1 GiB or a quarter of the
    memory available, whichever is less), and beyond it in a temporary folder, so that a long
    stretch between two corrections never needs memory that grows with its length."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = min(1 << 30, available_memory() // 4) if budget is None else budget
        self.used = 0
        self.items: list[Any] = []
        self.folder: tempfile.TemporaryDirectory | None = None

    def append(self, item: Any) -> None:
        size = _nbytes(item)
        if self.used + size <= self.budget:
            self.used += size
            self.items.append(item)
            return
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="colortrack-")
        path = Path(self.folder.name) / f"{len(self.items)}.npz"
        np.savez(path, *_arrays(item))
        self.items.append(_OnDisk(path, _kinds(item)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        item = self.items[index]
        if not isinstance(item, _OnDisk):
            return item
        with np.load(item.path, allow_pickle=False) as saved:
            arrays = [saved[f"arr_{i}"] for i in range(len(item.kinds))]
        return _restore(arrays, item.kinds)

    def close(self) -> None:
        self.items.clear()
        if self.folder is not None:
            self.folder.cleanup()


@dataclass(frozen=True)
class _OnDisk:
    """Where a spilled item lies, and what its parts were."""

    path: Path
    kinds: tuple[str, ...]


def _parts(item: Any) -> list[Any]:
    return list(item) if isinstance(item, tuple) else [item]


def _nbytes(item: Any) -> int:
    return sum(p.nbytes if isinstance(p, np.ndarray) else
               p.numel() * p.element_size() if isinstance(p, torch.Tensor) else 64
               for p in _parts(item))


def _arrays(item: Any) -> list[np.ndarray]:
    return [p.cpu().numpy() if isinstance(p, torch.Tensor) else np.zeros(0) if p is None
            else np.asarray(p) for p in _parts(item)]


def _kinds(item: Any) -> tuple[str, ...]:
    """What each part was, to restore it: a tensor's device, None, or an array."""
    return tuple(f"tensor:{p.device}" if isinstance(p, torch.Tensor) else
                 "none" if p is None else "array" for p in _parts(item))


def _restore(arrays: list[np.ndarray], kinds: tuple[str, ...]) -> Any:
    parts = [torch.from_numpy(a).to(k.split(":", 1)[1]) if k.startswith("tensor:") else
             None if k == "none" else a for a, k in zip(arrays, kinds, strict=True)]
    return tuple(parts) if len(parts) > 1 else parts[0]


class _Stream:
    """Frames 1, 2, ... and their features, pulled one at a time; `index` is the last pulled."""

    def __init__(self, items: Iterator[tuple[np.ndarray, Any]]) -> None:
        self.items, self.index = items, 0

    def pull(self) -> tuple[np.ndarray, Any] | None:
        item = next(self.items, None)
        if item is not None:
            self.index += 1
        return item


def _segment(stream: _Stream, head: Any, end: int | None, kept: Spill | list) -> Iterator[Any]:
    """Features of a segment's first frame (`head`), then of the frames up to `end` (excluded),
    each frame with its features kept for the caller."""
    yield head
    while end is None or stream.index + 1 < end:
        item = stream.pull()
        if item is None:
            return
        kept.append(item)
        yield item[1]


def two_way(
    propagator: LabelPropagator, items: Iterator[tuple[np.ndarray, Any]],
    first: tuple[np.ndarray, Any], given: Mapping[int, np.ndarray], *, budget: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
    """(index, frame, (K, H, W) soft labels, confidence) for frames 1, 2, ... of a video.

    `items` yields (frame, features) of frames 1, 2, ... in order; `first` is frame 0's
    (labels, features). `given` labels of later frames replace their predictions (confidence 1)
    and are copied from in both directions. Frames of a segment wait in a `Spill` until its
    backward run; after the last given frame they stream through."""
    labels0, features0 = first
    height, width = labels0.shape[-2:]
    stream = _Stream(items)
    start, head, cells0 = 0, features0, propagator.to_cells(labels0)
    for end in [*sorted(i for i in given if i > 0), None]:
        if end is None:
            pending: list = []
            run = propagator.copy(_segment(stream, head, None, pending), cells0)
            for t, cells in enumerate(run, start=start + 1):
                frame, _ = pending.pop(0)
                yield t, frame, propagator.to_pixels(cells, height, width), confidence(cells)
            return
        kept, ahead, back = Spill(budget), Spill(budget), Spill(budget)
        try:
            for cells in propagator.copy(_segment(stream, head, end, kept), cells0):
                ahead.append(cells)
            item = stream.pull()
            if item is None:
                raise PastEnd(end, stream.index + 1)
            frame, head = item
            cells0 = propagator.to_cells(given[end])
            backwards = (kept[i][1] for i in range(len(kept) - 1, -1, -1))
            for cells in propagator.copy(_chain(head, backwards), cells0):
                back.append(cells)
            for offset in range(len(kept)):
                t = start + 1 + offset
                cells = merge(ahead[offset], back[len(kept) - 1 - offset], t, start, end)
                labels = propagator.to_pixels(cells, height, width)
                yield t, kept[offset][0], labels, confidence(cells)
        finally:
            for spill in (kept, ahead, back):
                spill.close()
        yield end, frame, np.asarray(given[end], dtype=np.float32), 1.0
        start = end


def _chain(head: Any, rest: Iterable[Any]) -> Iterator[Any]:
    yield head
    yield from rest


class Corrections:
    """Two-way tracking of frames held in memory, kept up to date as labels are given.

    Each given frame's forward and backward runs are cached (as cells), so `update` after
    `give` recomputes only the runs from the frame that changed: the frames between its
    neighbouring given frames. Features are computed once (or passed in), in video order, and
    kept in memory as far as it allows (`Spill`).
    """

    def __init__(self, propagator: LabelPropagator, frames: Sequence[np.ndarray],
                 features: Sequence[Any] | None = None) -> None:
        self.propagator, self.frames, self.features = propagator, frames, features
        self.given: dict[int, np.ndarray] = {}
        self.runs: dict[tuple[int, int], list[Any]] = {}  # (given frame, +1 | -1) -> cells
        self.cells: dict[int, Any] = {}  # the merged labels of every tracked frame
        self.confidence: dict[int, float] = {}

    def give(self, index: int, labels: np.ndarray) -> None:
        """(K, H, W) labels for frame `index` (frame 0's first); `update` tracks what changed."""
        if not 0 <= index < len(self.frames):
            raise IndexError(f"frame {index} is outside a video of {len(self.frames)} frames")
        self.given[index] = np.asarray(labels, dtype=np.float32)
        for key in list(self.runs) if index == 0 else [(index, 1), (index, -1)]:
            self.runs.pop(key, None)
        self.cells.pop(index, None)

    def forget(self, index: int) -> None:
        """Take back the labels given for a later frame; `update` tracks it again."""
        if index == 0:
            raise ValueError("frame 0's labels can be replaced, not taken back")
        del self.given[index]
        for key in ((index, 1), (index, -1)):
            self.runs.pop(key, None)
        self.confidence.pop(index, None)

    def labels(self, index: int) -> np.ndarray:
        """(K, H, W) labels of a frame: as given, or as tracked."""
        if index in self.given:
            return self.given[index]
        height, width = self.given[0].shape[-2:]
        return self.propagator.to_pixels(self.cells[index], height, width)

    def stale(self) -> list[int]:
        """The frames `update` will track again."""
        points = sorted(self.given)
        ends = [*points[1:], len(self.frames)]
        return [t for start, end in zip(points, ends, strict=True)
                if not self._current(start, end) for t in range(start, end)]

    def _current(self, start: int, end: int) -> bool:
        """Whether the frames from given frame `start` up to `end` are up to date."""
        need = end - start - 1
        runs = [self.runs.get((start, 1))]
        if end < len(self.frames):
            runs.append(self.runs.get((end, -1)))
        return start in self.confidence and all(
            run is not None and len(run) >= need for run in runs) and all(
            t in self.cells for t in range(start + 1, end))

    def embed(self) -> Iterator[int]:
        """Compute the video's features unless they are known, yielding each frame's index."""
        if self.features is not None:
            return
        features = Spill()
        for index, item in enumerate(self.propagator.features(self.frames)):
            features.append(item)
            yield index
        self.features = features

    def update(self) -> Iterator[int]:
        """Track every frame not up to date, yielding each as its labels are ready."""
        if 0 not in self.given:
            raise ValueError("frame 0's labels are required")
        for _ in self.embed():
            pass
        points = sorted(self.given)
        for start, end in zip(points, [*points[1:], len(self.frames)], strict=True):
            if self._current(start, end):
                self._trim(start, end)
                continue
            bounded = end < len(self.frames)
            self._run(start, end, 1)
            if bounded:
                self._run(end, start, -1)
            forward, backward = self.runs[(start, 1)], self.runs.get((end, -1))
            self.confidence[start] = 1.0
            yield start
            for t in range(start + 1, end):
                cells = forward[t - start - 1]
                if bounded:
                    cells = merge(cells, backward[end - t - 1], t, start, end)
                self.cells[t], self.confidence[t] = cells, confidence(cells)
                yield t

    def _trim(self, start: int, end: int) -> None:
        """Drop cached cells past the frames a run now serves."""
        need = end - start - 1
        for key in ((start, 1), (end, -1)):
            if key in self.runs:
                del self.runs[key][need:]

    def _run(self, start: int, stop: int, step: int) -> None:
        """Copy from `start` towards `stop` (excluded), unless a long enough run is cached."""
        need = abs(stop - start) - 1
        cached = self.runs.get((start, step))
        if cached is not None and len(cached) >= need:
            del cached[need:]
            return
        assert self.features is not None
        run = [self.features[t] for t in range(start, stop, step)]
        self.runs[(start, step)] = list(
            self.propagator.copy(run, self.propagator.to_cells(self.given[start])))

    def least_confident(self) -> int | None:
        """The tracked frame the copy is least sure of: the one to correct next."""
        open_ = [t for t in self.confidence if t not in self.given]
        return min(open_, key=lambda t: (self.confidence[t], t)) if open_ else None
