"""What tracking copies from: the first frame, frames a user annotated, and recent predictions.

`Context` keeps them in the layout the windows read (padded by the reach, channels-last), keys
in the dtype that chooses the top-k, and the range of each tile's labels, so that `propagate`
can skip tiles whose references all agree. `reference.propagate` keeps the same frames as plain
lists; this is how the fast path avoids laying out each frame once per target it serves.
"""

from __future__ import annotations

import collections
import math

import torch
import torch.nn.functional as F

from colortrack.bounds import check_memory
from colortrack.copy.reference import FAR
from colortrack.copy.windows import TILE, Tile, as_tile, reach, window_shape

# Label spread below which a tile's references count as one label: their copy, a weighted mean,
# then lies within CONSTANT / 2 of their range's midpoint, whatever the weights. Propagated soft
# labels diffuse, so an exact test would find ever fewer such tiles (docs/performance.md).
CONSTANT = 1e-3


def _check_context_memory(h: int, w: int, d: int, c: int, recent: int, radius: float,
                          tile: Tile, windowed: int, scoring: torch.dtype, stored: int) -> None:
    """Refuse a context whose buffers alone would not fit in memory, before allocating them."""
    if radius <= 0:  # every frame kept whole; scores for up to 4096 queries at a time
        needed = 4 * (recent * h * w * (d + c) + 2 * min(h * w, 4096) * (recent + 1) * h * w)
    else:
        rows, cols = window_shape(tile, radius)
        cells = (-(-h // tile[0]) * tile[0] + rows) * (-(-w // tile[1]) * tile[1] + cols)
        per_cell = d * stored + (4 * d if scoring != torch.float32 else 0) + 4 * c
        needed = windowed * cells * per_cell
    check_memory(needed, f"tracking with {recent} context frames and radius {radius:g} on a "
                 f"{w}x{h} feature grid", "lower --set context or radius, or use a smaller video")


class Context:
    """What tracking copies from: the first frame and a ring of the last `recent` predictions.

    Windowed frames (the recent ones; the first too unless `global_first`) are stored once,
    zero-padded by the reach and channels-last, in the layout the windows read, so a frame is
    laid out once rather than once for each of the `recent` targets it serves. Keys are stored
    in the `scoring` dtype of the window products (float32, bfloat16, or int8: products in
    int32) and, when that is not float32, in float32 too, to score the references that the
    products picked. int8 products run on `torch._int_mm` (fast where the CPU has VNNI or AMX)
    or, with `int8_in_float`, as float32 GEMMs of the same integers: the same int32 sums, for
    CPUs where `_int_mm` is a plain loop (docs/performance.md). With every frame windowed, each
    frame also keeps the range of its labels over each tile's window: a tile whose references
    all carry the same label, to CONSTANT (background far from every object), gets it without
    scoring. radius <= 0 searches every frame everywhere, without windows.
    Windowed slots are laid out [first, recent ring], the frames searched always the first
    `windowed` of them.
    """

    @torch.inference_mode()
    def __init__(self, keys: torch.Tensor, labels: torch.Tensor, *, recent: int, radius: float,
                 global_first: bool = True, tile: int | Tile = TILE,
                 scoring: torch.dtype = torch.float32, int8_in_float: bool = False) -> None:
        d, self.h, self.w = keys.shape
        # int8 keys held as float32 integers when float32 products compute their sums, which
        # are exact below 2^24: up to 1,040 channels (beyond, torch._int_mm computes them).
        in_float = scoring == torch.int8 and int8_in_float and d * 127**2 < 2**24
        stored = torch.float32 if in_float else scoring
        self.radius, self.tile, self.recent = radius, as_tile(tile), recent
        self.global_first = global_first or radius <= 0
        self.first = (keys.flatten(1).T, labels.flatten(1).T)  # (hw, D), (hw, C)
        self.dense: collections.deque = collections.deque(maxlen=recent)
        (th, tw), c = self.tile, labels.shape[0]
        slots = recent + (0 if self.global_first else 1)
        _check_context_memory(self.h, self.w, d, c, recent, radius, self.tile, slots, scoring,
                              stored.itemsize)
        if radius <= 0:
            return
        self.rows, self.cols = window_shape(self.tile, radius)
        # Padded by the reach above and left; below and right, far enough for the last tile's
        # window (the columns' rounding included).
        self.gy, self.gx = -(-self.h // th), -(-self.w // tw)
        hp, wp = (self.gy - 1) * th + self.rows, (self.gx - 1) * tw + self.cols
        # int8 values in float32 are laid out (slots, rows, channels, columns): a window row's
        # keys for one channel are contiguous, as the native kernel's FMAs read them.
        self.in_float, self.quantized = in_float, scoring == torch.int8
        self.scored = (keys.new_zeros(slots, hp, d, wp) if in_float
                       else keys.new_zeros(slots, hp, wp, d, dtype=stored))
        self.exact = None if scoring == torch.float32 else keys.new_zeros(slots, hp, wp, d)
        # Lower-precision keys are stored minus the first frame's mean key: q.(k - m) ranks keys
        # as q.k does (q.m is the same for every key of a query), and when embeddings are nearly
        # parallel (an untrained encoder, flat regions) the differences keep their precision
        # where q.k would round to a few values near 1 and tie. float32 products are the scores
        # themselves (they meet the first frame's in one softmax), so those keys stay as given.
        self.center = keys.mean((1, 2)) if self.exact is not None else keys.new_zeros(d)
        # int8 keys: one scale per channel for every frame (scores of different frames must
        # compare), set so the first frame's centred keys span +-127 in each channel; later
        # outliers saturate. Queries are divided by the same scales, so q.k keeps its ranking,
        # then scaled per location, which leaves each location's ranking unchanged.
        self.scale = None
        if self.quantized:
            spread = (keys - self.center.view(-1, 1, 1)).abs().amax((1, 2))
            self.scale = torch.where(spread > 0, 127 / spread, torch.ones_like(spread))
        self._buffer = keys.new_empty(0, dtype=torch.int32 if self.quantized
                                      else torch.float32)  # scores, reused (see `scores`)
        self.values = labels.new_zeros(slots, hp, wp, c)
        self.high = labels.new_empty(slots, c, self.gy, self.gx)
        self.low = labels.new_empty(slots, c, self.gy, self.gx)
        # Row of window cell (frame, y, x) of tile (ty, tx) in the flattened (slots, hp, wp):
        # the tile's corner + the cell's offset.
        rows, cols = (torch.arange(n, device=keys.device) for n in (self.rows, self.cols))
        self.offsets = (torch.arange(slots, device=keys.device).view(-1, 1, 1) * hp * wp
                        + rows.view(-1, 1) * wp + cols).flatten()
        self.corners = (torch.arange(self.gy, device=keys.device).view(-1, 1) * th * wp
                        + torch.arange(self.gx, device=keys.device) * tw).flatten()
        self.count = 0  # frames appended so far
        if not self.global_first:
            self._store(0, keys, labels)

    @property
    def windowed(self) -> int:
        """Frames searched within the radius."""
        return min(self.count, self.recent) + (0 if self.global_first else 1)

    @torch.inference_mode()
    def append(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a predicted frame; the oldest recent frame leaves once `recent` are held."""
        if self.recent == 0:
            return
        if self.radius <= 0:
            self.dense.append((keys.flatten(1).T, labels.flatten(1).T))
            return
        self._store(self._ring + self.count % self.recent, keys, labels)
        self.count += 1

    @property
    def _ring(self) -> int:
        """The slot where the ring of recent frames starts."""
        return 0 if self.global_first else 1

    def _store(self, slot: int, keys: torch.Tensor, labels: torch.Tensor) -> None:
        r, (th, tw), h, w = reach(self.radius), self.tile, self.h, self.w
        centred = (keys - self.center.view(-1, 1, 1)).permute(1, 2, 0)
        if self.quantized:
            centred = centred.mul(self.scale).round_().clamp_(-127, 127)
        if self.in_float:
            self.scored[slot, r:r + h, :, r:r + w] = centred.transpose(1, 2)
        else:
            self.scored[slot, r:r + h, r:r + w] = centred
        if self.exact is not None:
            self.exact[slot, r:r + h, r:r + w] = keys.permute(1, 2, 0)
        self.values[slot, r:r + h, r:r + w] = labels.permute(1, 2, 0)
        pad, reached = (r, r + (-w % tw), r, r + (-h % th)), (th + 2 * r, tw + 2 * r)
        self.high[slot] = F.max_pool2d(F.pad(labels, pad, value=-torch.inf), reached, self.tile)
        self.low[slot] = -F.max_pool2d(F.pad(-labels, pad, value=-torch.inf), reached, self.tile)

    def _windows(self, tiles: list[int]) -> list[tuple[slice, slice, slice]]:
        """(frames, rows, columns) of each tile's windows in the padded buffers."""
        (th, tw), rows, cols = self.tile, self.rows, self.cols
        return [(slice(0, self.windowed), slice(i // self.gx * th, i // self.gx * th + rows),
                 slice(i % self.gx * tw, i % self.gx * tw + cols)) for i in tiles]

    @property
    def score_dtype(self) -> torch.dtype:
        """What `scores` returns: int32 for int8 keys, float32 otherwise."""
        return self._buffer.dtype

    def prepare(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries (G, Q, D) as the window products take them, once per frame: in the keys'
        dtype; for int8, divided by the keys' channel scales (so q.k keeps its ranking), then
        scaled per location to +-127 (which leaves each location's ranking unchanged)."""
        if not self.quantized:
            return queries.to(self.scored.dtype)
        queries = queries / self.scale
        peak = queries.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(queries.dtype).tiny)
        return queries.mul_(127 / peak).round_().to(self.scored.dtype)

    def scores(self, queries: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """(G, Q, frames * rows * cols) products of each tile's queries (G, Q, D), as `prepare`
        gives them, with the keys of its windows, copied one slice per tile (10x faster on
        CPUs than advanced indexing), in `score_dtype`. Products are written into a buffer kept
        across calls: a fresh tensor per call costs more in page faults than their copy."""
        windows = self._windows(tiles.tolist())
        if self.in_float:
            keys = torch.stack([self.scored[n, y, :, x] for n, y, x in windows])
            keys = keys.transpose(-1, -2).flatten(1, 3)
        else:
            keys = torch.stack([self.scored[n, y, x] for n, y, x in windows]).flatten(1, 3)
        if self.exact is None:
            return torch.bmm(queries, keys.transpose(1, 2))
        shape = (*queries.shape[:2], keys.shape[1])
        size = math.prod(shape)
        if self._buffer.numel() < size:
            self._buffer = self._buffer.new_empty(size)
        out = self._buffer[:size].view(shape)
        if keys.dtype != torch.int8:  # bf16, or int8 values whose float32 sums are exact
            return out.copy_(torch.bmm(queries, keys.transpose(1, 2)))
        # int8 x int8 -> int32 (VNNI on x86): about 2x bf16's products, and the masking,
        # block maxima and top-k that follow run on integers without a conversion pass.
        for i in range(len(queries)):
            torch._int_mm(queries[i], keys[i].T, out=out[i])
        return out

    def labels(self, tiles: torch.Tensor) -> torch.Tensor:
        """(G, frames * rows * cols, C): the labels of each tile's windows (to copy without
        top-k)."""
        windows = self._windows(tiles.tolist())
        return torch.stack([self.values[n, y, x] for n, y, x in windows]).flatten(1, 3)

    def pick(self, queries: torch.Tensor, tiles: torch.Tensor, top: torch.Tensor,
             index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The labels (G, Q, k, C) of the references `index` (G, Q, k) picked in the windows of
        `tiles`, and their scores `top`, recomputed in float32 when scoring ran in lower
        precision (which then only chose them). Out-of-reach picks keep their FAR score."""
        rows = (self.corners[tiles].view(-1, 1, 1) + self.offsets[index]).flatten()
        labels = self.values.view(-1, self.values.shape[-1]).index_select(0, rows)
        labels = labels.view(*index.shape, -1)
        if self.exact is None:
            return top, labels
        keys = self.exact.view(-1, self.exact.shape[-1]).index_select(0, rows)
        keys = keys.view(*index.shape, -1)  # (G, Q, k, D)
        exact = torch.einsum("gqd,gqkd->gqk", queries.float(), keys)  # 3x matmul's speed
        return exact.masked_fill_(top <= FAR / 2, FAR), labels

    def constant_tiles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(G,) bool: tiles whose windows in every windowed frame carry one label (to CONSTANT),
        and (G, C) that label, the midpoint of their range: their queries' copy, a weighted mean
        of those labels, lies within CONSTANT / 2 of it."""
        n = self.windowed
        high, low = self.high[:n].amax(0).flatten(1).T, self.low[:n].amin(0).flatten(1).T
        return (high - low).amax(1) <= CONSTANT, (high + low) / 2
