"""The copy operator: the one piece shared by training and tracking.

Training copies *colors* from reference frames to a gray target; tracking copies *labels* (masks,
keypoint heatmaps) from the first frame and recent predictions to the next frame. Both are
    y_j = sum_i softmax_i(s_ij) v_i,   s_ij = f_i . f_j / T,
optionally restricted to each target location's top-k references and to a local radius.
"""

from __future__ import annotations

import collections
import functools
import math

import torch
import torch.nn.functional as F

from colortrack.bounds import check_memory

# The fused copy kernel, where setup.py found a C compiler; else the same in PyTorch. Imported
# after torch, so that an OpenMP build shares the OpenMP runtime PyTorch loaded (see setup.py).
try:
    from colortrack import _window as native
except ImportError:
    native = None

FAR = -1e9  # score of a reference that is out of reach (finite, so softmax never sees all -inf)
# Label spread below which a tile's references count as one label: their copy, a weighted mean,
# then lies within CONSTANT / 2 of their range's midpoint, whatever the weights. Propagated soft
# labels diffuse, so an exact test (1e-5) found ever fewer such tiles (DAVIS dog: 12% of tiles
# at frame 10, 1% from frame 30; 1e-3: 22%, then 12-16%): the copy step took 0.87x the time on
# dog, with DAVIS dev J&F 59.182 against 59.181 (every sequence equal to 0.01), BADJA unchanged,
# and masks still the plain reference's in float32 (39/39 frames of dog).
CONSTANT = 1e-3
# Scores per chunk of query tiles: on a CPU, few enough to stay near the cores (with int8
# products, 1<<21 won 7 of 12 alternated bench_copy pairs against 1<<20 at radius 12, and with
# 4 x 10 tiles took 0.99x its time paired per frame on dog: within the machine's noise, so the
# smaller, cache-friendlier chunk stays); on a GPU, enough that each kernel has work for every
# core (a chunk costs the same few launches whatever its size).
BUDGET = {"cpu": 1 << 20, "cuda": 1 << 25}
# The native kernel's instruction set: its best on this CPU (2 AVX-512, 1 AVX2, 0 portable C);
# lower only to test the other paths.
LEVEL = native.best_level() if native is not None else 0


def dense_affinity(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(G, Nq, D) x (G or 1, Nk, D) -> (G, Nq, Nk) dot products."""
    return torch.matmul(query, keys.transpose(-1, -2))


def copy_soft(scores: torch.Tensor, values: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Copy values through softmax(scores): scores (G, Nq, Nk), values (G|1, Nk, C) -> (G, Nq, C).

    With `topk`, each query keeps only its k best references (softmax over those k), as in CRW.
    """
    if topk is None or topk >= scores.shape[-1]:
        return torch.matmul(torch.softmax(scores, dim=-1), values)
    top, index = scores.topk(topk, dim=-1)  # (G, Nq, k)
    weights = torch.softmax(top, dim=-1)
    picked = _pick(values[0] if values.shape[0] == 1 else values, index)  # (G, Nq, k, C)
    return torch.einsum("gqk,gqkc->gqc", weights, picked)


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The values of the references picked by `index` (G, Q, k): values (N, C) shared by every
    group, or (G, N, C), one set per group -> (G, Q, k, C)."""
    if values.dim() == 2:
        return values[index]
    g, n = values.shape[:2]
    offsets = torch.arange(g, device=index.device).view(g, 1, 1) * n
    return values.reshape(g * n, -1)[index + offsets]


# --- Local windows for tracking -------------------------------------------------------------
# Queries are cut into tiles of th x tw cells (`tile`); each tile scores one window around it
# in every windowed context frame: th + 2e rows by tw + 2e columns, where e = `reach(radius)`,
# the columns rounded up to a multiple of 8 so that rows of scores split into whole blocks for
# `fast_topk` (the extra columns are out of reach). Cost grows with r^2, not with h*w. Products
# outside a query's radius are wasted, window / (pi r^2) of them: small tiles waste less, large
# ones amortize each call. At radius 12 a 4 x 10 tile scores 26 x 32 cells per frame against
# 8 x 8's 30 x 32; paired per frame on DAVIS dog, camel and parkour (40 frames each), its copy
# step took 0.77-0.88x the time of 8 x 8's former 32 x 32 windows (8 x 8 now: 0.93).
Tile = tuple[int, int]
TILE: Tile = (4, 10)


def reach(radius: float) -> int:
    """The farthest offset, in cells along a row or column, within `radius` (references count
    at distances below the radius, as in CRW): 11 for radius 12."""
    return max(0, math.ceil(radius) - 1)


def as_tile(tile: int | Tile) -> Tile:
    """(rows, columns) of a tile given as one side or as both."""
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def window_shape(tile: Tile, radius: float) -> tuple[int, int]:
    """Rows and columns of the window that a tile scores in each context frame."""
    e = reach(radius)
    return tile[0] + 2 * e, -(-(tile[1] + 2 * e) // 8) * 8


def tile_queries(x: torch.Tensor, tile: int | Tile) -> torch.Tensor:
    """(C, h, w) -> (G, th*tw, C): non-overlapping tiles (zero padded to whole tiles), in
    row-major order of tiles and of cells within a tile."""
    (th, tw), (c, h, w) = as_tile(tile), x.shape
    x = F.pad(x, (0, -w % tw, 0, -h % th))
    gy, gx = x.shape[1] // th, x.shape[2] // tw
    # Copied into a contiguous tensor: reshape would keep the permuted strides (channels
    # slowest within a tile), which the native kernel cannot read.
    out = x.new_empty(gy * gx, th * tw, c)
    out.view(gy, gx, th, tw, c).copy_(x.view(c, gy, th, gx, tw).permute(1, 3, 2, 4, 0))
    return out


def untile(tiles: torch.Tensor, tile: int | Tile, h: int, w: int) -> torch.Tensor:
    """Inverse of `tile_queries`: (G, th*tw, C) -> (C, h, w)."""
    th, tw = as_tile(tile)
    gy, gx, c = -(-h // th), -(-w // tw), tiles.shape[-1]
    x = tiles.view(gy, gx, th, tw, c).permute(4, 0, 2, 1, 3)  # (C, gy, th, gx, tw)
    return x.reshape(c, gy * th, gx * tw)[:, :h, :w]


@functools.lru_cache(maxsize=8)
def window_bias(h: int, w: int, tile: Tile, radius: float, device: torch.device,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores to add to the windows so that keys out of reach never count: 0 within reach,
    FAR beyond (adding runs 20x faster on CPUs than a broadcast masked_fill). `dtype` is the
    scores': float32, or int32 for int8 products (FAR is exact there, and far below any
    product of two int8 vectors of up to 4,096 dimensions: 127^2 * 4096 = 6.6e7).

    A window's bias depends only on which of its rows and columns fall outside the image, so
    there are a few kinds (inner tiles, each border): returns the biases of the kinds,
    (K, th*tw, 1, rows*cols), and each tile's kind, (G,). Memory does not grow with the image."""
    (th, tw), e = tile, reach(radius)
    rows, cols = window_shape(tile, radius)
    qy, qx = torch.meshgrid(torch.arange(th), torch.arange(tw), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(rows) - e, torch.arange(cols) - e, indexing="ij")
    far = ((ky.reshape(1, -1) - qy.reshape(-1, 1)) ** 2
           + (kx.reshape(1, -1) - qx.reshape(-1, 1)) ** 2).float() >= radius**2
    circle = torch.zeros(far.shape).masked_fill_(far, FAR).view(th * tw, 1, rows, cols)

    def outside(length: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per tile along one axis, which of its window's cells are outside: kinds and ids."""
        cells = torch.arange(0, length + (-length % step), step).unsqueeze(1)
        cells = cells + torch.arange(size) - e
        kinds, ids = torch.unique((cells < 0) | (cells >= length), dim=0, return_inverse=True)
        return torch.zeros(kinds.shape).masked_fill_(kinds, FAR), ids

    row_bias, row_ids = outside(h, th, rows)
    col_bias, col_ids = outside(w, tw, cols)
    edges = row_bias[:, None, :, None] + col_bias[None, :, None, :]  # (row kinds, col kinds, ..)
    biases = (circle + edges.reshape(-1, 1, 1, rows, cols)).flatten(-2).clamp_(min=FAR)
    kind = row_ids[:, None] * len(col_bias) + col_ids[None, :]  # (Gy, Gx)
    return biases.to(device, dtype), kind.flatten().to(device)


def _check_context_memory(h: int, w: int, d: int, c: int, recent: int, radius: float,
                          tile: Tile, windowed: int, scoring: torch.dtype) -> None:
    """Refuse a context whose buffers alone would not fit in memory, before allocating them."""
    if radius <= 0:  # every frame kept whole; scores for up to 4096 queries at a time
        needed = 4 * (recent * h * w * (d + c) + 2 * min(h * w, 4096) * (recent + 1) * h * w)
    else:
        rows, cols = window_shape(tile, radius)
        cells = (-(-h // tile[0]) * tile[0] + rows) * (-(-w // tile[1]) * tile[1] + cols)
        per_cell = d * scoring.itemsize + (4 * d if scoring != torch.float32 else 0) + 4 * c
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
    products picked. With every frame windowed, each frame also keeps the range of its labels
    over each tile's window: a tile whose references all carry the same label, to CONSTANT
    (background far from every object), gets it without scoring. radius <= 0 searches every frame
    everywhere, without windows.

    `anchors` frames more can join the first as long-term references (`anchor`: frames whose
    labels a user gave); each is one more reference frame in the same top-k and softmax, so an
    anchor weighs as much as the first frame. Windowed slots are laid out [first, anchors,
    recent ring], the frames searched always the first `windowed` of them.
    """

    @torch.inference_mode()
    def __init__(self, keys: torch.Tensor, labels: torch.Tensor, *, recent: int, radius: float,
                 global_first: bool = True, tile: int | Tile = TILE,
                 scoring: torch.dtype = torch.float32, anchors: int = 0) -> None:
        d, self.h, self.w = keys.shape
        self.radius, self.tile, self.recent = radius, as_tile(tile), recent
        self.anchors, self.capacity = 0, anchors
        self.global_first = global_first or radius <= 0
        self.first = (keys.flatten(1).T, labels.flatten(1).T)  # (hw, D), (hw, C)
        self.dense: collections.deque = collections.deque(maxlen=recent)
        (th, tw), c = self.tile, labels.shape[0]
        slots = recent + (0 if self.global_first else 1 + anchors)
        _check_context_memory(self.h, self.w, d, c, recent, radius, self.tile, slots, scoring)
        if radius <= 0:
            return
        self.rows, self.cols = window_shape(self.tile, radius)
        # Padded by the reach above and left; below and right, far enough for the last tile's
        # window (the columns' rounding included).
        self.gy, self.gx = -(-self.h // th), -(-self.w // tw)
        hp, wp = (self.gy - 1) * th + self.rows, (self.gx - 1) * tw + self.cols
        self.scored = keys.new_zeros(slots, hp, wp, d, dtype=scoring)
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
        if scoring == torch.int8:
            spread = (keys - self.center.view(-1, 1, 1)).abs().amax((1, 2))
            self.scale = torch.where(spread > 0, 127 / spread, torch.ones_like(spread))
        self._buffer = keys.new_empty(0, dtype=torch.int32 if scoring == torch.int8
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
        return min(self.count, self.recent) + (0 if self.global_first else 1 + self.anchors)

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
        return 0 if self.global_first else 1 + self.anchors

    @torch.inference_mode()
    def anchor(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a frame whose labels are given as a long-term reference, like the first. The
        recent predictions leave: where they disagree with the given labels (an object they
        missed), they would outvote them in every frame after."""
        if self.anchors >= self.capacity:
            raise ValueError(f"this Context holds {self.capacity} anchors; build it with more")
        self.anchors, self.count = self.anchors + 1, 0
        self.dense.clear()
        if self.global_first:  # searched everywhere, as the first frame
            first_keys, first_values = self.first
            self.first = (torch.cat([first_keys, keys.flatten(1).T]),
                          torch.cat([first_values, labels.flatten(1).T]))
        else:
            self._store(self.anchors, keys, labels)

    def _store(self, slot: int, keys: torch.Tensor, labels: torch.Tensor) -> None:
        r, (th, tw), h, w = reach(self.radius), self.tile, self.h, self.w
        centred = (keys - self.center.view(-1, 1, 1)).permute(1, 2, 0)
        if self.scored.dtype == torch.int8:
            centred = centred.mul(self.scale).round_().clamp_(-127, 127)
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
        if self.scored.dtype != torch.int8:
            return queries.to(self.scored.dtype)
        queries = queries / self.scale
        peak = queries.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(queries.dtype).tiny)
        return queries.mul_(127 / peak).round_().to(torch.int8)

    def scores(self, queries: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """(G, Q, frames * rows * cols) products of each tile's queries (G, Q, D), as `prepare`
        gives them, with the keys of its windows, copied one slice per tile (10x faster on
        CPUs than advanced indexing), in `score_dtype`. Products are written into a buffer kept
        across calls: a fresh tensor per call costs more in page faults than their copy."""
        windows = self._windows(tiles.tolist())
        keys = torch.stack([self.scored[n, y, x] for n, y, x in windows]).flatten(1, 3)
        if self.exact is None:
            return torch.bmm(queries, keys.transpose(1, 2))
        shape = (*queries.shape[:2], keys.shape[1])
        size = math.prod(shape)
        if self._buffer.numel() < size:
            self._buffer = self._buffer.new_empty(size)
        out = self._buffer[:size].view(shape)
        if keys.dtype != torch.int8:
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


@torch.inference_mode()
def propagate(query: torch.Tensor, context: Context, *, temperature: float, topk: int | None,
              budget: int | None = None) -> torch.Tensor:
    """Labels (C, h, w) of a new frame with features (D, h, w), copied from `context`.

    Recent frames are searched within the radius; the first frame everywhere when `global_first`
    (CRW), else within the radius too (DINO). With top-k, each query keeps its k best references
    over all frames. Queries are scored `budget` scores at a time (default: BUDGET). With int8
    products (CPUs), top-k and windows only, what follows the products runs in the native kernel
    where it is built (`copy_windows`), else in PyTorch. Tracking never needs gradients: the
    Context and this run in inference mode wherever they are called.
    """
    d, h, w = query.shape
    first_keys, first_values = context.first
    if context.radius <= 0:
        keys = torch.cat([first_keys, *(k for k, _ in context.dense)])
        values = torch.cat([first_values, *(v for _, v in context.dense)])
        q = query.flatten(1).T.unsqueeze(0)
        out = torch.cat([copy_soft(dense_affinity(qc, keys[None]) / temperature, values[None],
                                   topk) for qc in q.split(4096, dim=1)], dim=1)
        return out[0].T.reshape(-1, h, w)
    tile, n = context.tile, context.windowed
    if topk is None and context.exact is not None:
        raise ValueError("scoring below float32 only chooses the top-k: pass topk, or build the "
                         "Context with scoring=torch.float32")
    queries = tile_queries(query, tile)  # (G, th*tw, D)
    out = queries.new_empty(len(queries), tile[0] * tile[1], first_values.shape[1])
    todo = torch.arange(len(queries), device=query.device)
    if not context.global_first:  # else every query sees the whole first frame, never constant
        constant, label = context.constant_tiles()
        out[constant] = label[constant].unsqueeze(1)
        todo = todo[~constant]
    # The tiles left, gathered once in the order the chunks take them (a chunk's are a view).
    queries = queries[todo]
    if n:
        biases, kind = window_bias(h, w, tile, float(context.radius), query.device,
                                   context.score_dtype)
        prepared, kind = context.prepare(queries), kind[todo]
    cells = n * context.rows * context.cols
    per_tile = tile[0] * tile[1] * (cells + (h * w if context.global_first else 0))
    budget = budget or BUDGET.get(query.device.type, BUDGET["cpu"])
    step = max(1, budget // per_tile)
    k = min(topk or cells, cells)
    fused = (native is not None and n and not context.global_first and topk is not None
             and context.score_dtype == torch.int32 and k <= native.MAX_K
             and context.rows * context.cols <= native.MAX_CELLS)
    copied = queries.new_empty(len(todo), *out.shape[1:])
    if fused:  # the buffers as rows of cells, as the kernel reads them
        keys, values = context.exact.view(-1, d), context.values.view(-1, out.shape[-1])
    for start in range(0, len(todo), step):
        chunk = slice(start, start + step)
        tiles, q = todo[chunk], queries[chunk]
        if fused:
            copy_windows(context.scores(prepared[chunk], tiles), biases, kind[chunk], q, keys,
                         values, context.corners[tiles], context.offsets, k, temperature,
                         copied[chunk])
            continue
        parts = []  # without top-k: (scores, labels); with: the k best (scores, labels) of each
        if context.global_first:
            scores = dense_affinity(q, first_keys[None])
            if topk is None:
                parts.append((scores, first_values))
            else:
                top, index = fast_topk(scores, min(topk, scores.shape[-1]))
                parts.append((top, _pick(first_values, index)))
        if n:
            scores = context.scores(prepared[chunk], tiles)
            scores.view(len(q), q.shape[1], n, -1).add_(biases[kind[chunk]])
            if topk is None:
                parts.append((scores, context.labels(tiles)))
            else:
                top, index = fast_topk(scores, k)
                parts.append(context.pick(q, tiles, top, index))
        copied[chunk] = _copy_parts(parts, temperature, topk)
    out[todo] = copied
    return untile(out, tile, h, w)


def copy_windows(scores: torch.Tensor, biases: torch.Tensor, kind: torch.Tensor,
                 queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 corners: torch.Tensor, offsets: torch.Tensor, k: int, temperature: float,
                 out: torch.Tensor, level: int | None = None) -> None:
    """The native kernel (_window.c): what the PyTorch path does from the int32 window scores
    on, in one pass per query, written into `out` (G, Q, C). For tile g and query q: scores[g, q]
    (frames * cells) plus biases[kind[g], q] (K, Q, 1, cells) of each frame, its k best (ties to
    the lower index), those rescored as queries[g, q] . keys[r] in float32, with r = corners[g] +
    offsets[i] for window cell i, then softmax(score / temperature) over values[r] (N, C).
    The kernel reads raw memory, so shapes, dtypes and layouts are checked here first."""
    if native is None:
        raise RuntimeError("colortrack._window is not built in this installation (reinstall "
                           "with a C compiler); propagate() runs the same copy in PyTorch")
    expected = [(scores, torch.int32), (biases, torch.int32), (kind, torch.int64),
                (queries, torch.float32), (keys, torch.float32), (values, torch.float32),
                (corners, torch.int64), (offsets, torch.int64), (out, torch.float32)]
    for tensor, dtype in expected:
        if tensor.dtype != dtype or tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ValueError(f"copy_windows: got a {tensor.dtype} {tensor.device} tensor of "
                             f"strides {tensor.stride()}, needs a contiguous {dtype} on cpu")
    (g, q, d), cells, c = queries.shape, biases.shape[-1], values.shape[-1]
    frames = scores.shape[-1] // max(cells, 1)
    shapes = (scores.shape == (g, q, frames * cells) and biases.shape[1:] == (q, 1, cells)
              and keys.shape[1] == d and len(values) == len(keys) and out.shape == (g, q, c)
              and len(kind) == len(corners) == g and len(offsets) >= frames * cells)
    if not shapes:
        raise ValueError(f"copy_windows: scores {tuple(scores.shape)}, biases "
                         f"{tuple(biases.shape)}, queries {tuple(queries.shape)}, keys "
                         f"{tuple(keys.shape)}, values {tuple(values.shape)} and out "
                         f"{tuple(out.shape)} do not fit together")
    native.copy_windows(scores.data_ptr(), g * q, frames, cells, biases.data_ptr(), len(biases),
                        kind.data_ptr(), q, k, temperature, int(FAR), queries.data_ptr(), d,
                        keys.data_ptr(), values.data_ptr(), len(keys), c, corners.data_ptr(),
                        offsets.data_ptr(), out.data_ptr(), LEVEL if level is None else level)


def fast_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`scores.topk(k)` over the last axis, about 2x faster on the long rows of tracking.

    The rows are cut into blocks of b (a power of two up to 64 that divides them; 3x faster
    maxima than 60); the k best scores lie in the k blocks with the best maxima (a block holding
    one of them has a max at least as large), so only those k*b candidates are ranked, after
    one cheap max pass.
    """
    n = scores.shape[-1]
    block = next((b for b in (64, 32, 16) if n % b == 0 and n // b >= k), 0)
    if not block:
        return scores.topk(k, dim=-1)
    blocks = scores.reshape(-1, n // block, block)
    _, best = blocks.amax(-1).topk(k, dim=-1)  # (rows, k) blocks
    first = torch.arange(0, blocks.shape[0] * (n // block), n // block, device=scores.device)
    # Whole blocks are contiguous: index_select copies them 10x faster than an element gather.
    candidates = blocks.flatten(0, 1).index_select(0, (best + first.unsqueeze(1)).flatten())
    top, position = candidates.view(len(best), k * block).topk(k, dim=-1)
    best, top, position = (x.view(*scores.shape[:-1], k) for x in (best, top, position))
    return top, torch.gather(best, -1, position // block) * block + position % block


def _copy_parts(parts: list[tuple[torch.Tensor, torch.Tensor]], temperature: float,
                topk: int | None) -> torch.Tensor:
    """`copy_soft` over the union of several reference sets, without concatenating them whole.

    With top-k, each set comes as its own k best, scores (G, Q, k) and labels (G, Q, k, C) (the
    k best of a union are among them); without, as scores (G, Q, N) and labels (N, C) or
    (G, N, C), whose softmaxes are merged through their log-sum-exps. Returns (G, Q, C).
    """
    if topk is None:
        scores = [s / temperature for s, _ in parts]
        totals = torch.stack([s.logsumexp(-1) for s in scores])  # (P, G, Q)
        weights = torch.softmax(totals, dim=0).unsqueeze(-1)
        return sum(wt * copy_soft(s, v if v.dim() == 3 else v[None])
                   for wt, s, (_, v) in zip(weights, scores, parts, strict=True))
    top = torch.cat([t for t, _ in parts], dim=-1) if len(parts) > 1 else parts[0][0]
    values = torch.cat([v for _, v in parts], dim=2) if len(parts) > 1 else parts[0][1]
    g, q, k, c = values.shape
    out = copy_soft(top.reshape(g * q, 1, k) / temperature, values.reshape(g * q, k, c), topk)
    return out.view(g, q, c)
