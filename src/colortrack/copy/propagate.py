"""The fast path of the copy step in tracking: `reference.propagate`'s masks, made fast.

Per target frame, `propagate` scores each tile of queries against its windows in the Context's
frames (`windows.py`), in int8 or bf16 where those products only choose each location's top-k
(the chosen are rescored in float32), skips tiles whose references carry one label, and hands
the rest to the native kernel (`native.py`) where it is built. In float32 it gives the
reference's masks; the tests check it against the definition on every path.
"""

from __future__ import annotations

import torch

from colortrack.copy import native
from colortrack.copy.context import Context
from colortrack.copy.reference import copy_soft, dense_affinity
from colortrack.copy.windows import fast_topk, tile_queries, untile, window_bias

# Scores per chunk of query tiles: on a CPU few enough to stay in cache; on a GPU enough that
# each kernel launch has work for every core.
BUDGET = {"cpu": 1 << 20, "cuda": 1 << 25}


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The values of the references picked by `index` (G, Q, k): values (N, C) shared by every
    group, or (G, N, C), one set per group -> (G, Q, k, C)."""
    if values.dim() == 2:
        return values[index]
    g, n = values.shape[:2]
    offsets = torch.arange(g, device=index.device).view(g, 1, 1) * n
    return values.reshape(g * n, -1)[index + offsets]

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
    fused = (native.kernel is not None and n and not context.global_first and topk is not None
             and context.score_dtype == torch.int32 and k <= native.kernel.MAX_K
             and context.rows * context.cols <= native.kernel.MAX_CELLS)
    if fused and context.in_float:  # the kernel makes each tile's scores itself, in cache
        step = max(1, len(todo))
    copied = queries.new_empty(len(todo), *out.shape[1:])
    if fused:  # the buffers as rows of cells, as the kernel reads them
        keys, values = context.exact.view(-1, d), context.values.view(-1, out.shape[-1])
    for start in range(0, len(todo), step):
        chunk = slice(start, start + step)
        tiles, q = todo[chunk], queries[chunk]
        if fused:
            made = (prepared[chunk], context.scored, n, context.rows) if context.in_float else None
            scores = None if made else context.scores(prepared[chunk], tiles)
            native.copy_windows(scores, biases, kind[chunk], q, keys, values,
                                context.corners[tiles], context.offsets, k, temperature,
                                copied[chunk], products=made)
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
