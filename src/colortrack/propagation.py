"""The copy operator: the one piece shared by training and tracking.

Training copies *colors* from reference frames to a gray target; tracking copies *labels* (masks,
keypoint heatmaps) from the first frame and recent predictions to the next frame. Both are
    y_j = sum_i softmax_i(s_ij) v_i,   s_ij = f_i . f_j / T,
optionally restricted to each target location's top-k references and to a local radius.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

_FAR = -1e9  # score of a reference that is out of reach (finite, so softmax never sees all -inf)


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
    g, nk, c = scores.shape[0], values.shape[1], values.shape[2]
    if values.shape[0] == 1:
        picked = values[0][index]  # (G, Nq, k, C)
    else:
        offsets = torch.arange(g, device=index.device).view(g, 1, 1) * nk
        picked = values.reshape(g * nk, c)[index + offsets]
    return torch.einsum("gqk,gqkc->gqc", weights, picked)


# --- Local windows for tracking -------------------------------------------------------------
# Queries are cut into square tiles of `tile` x `tile` cells; each tile attends to the window of
# (tile + 2r)^2 cells around it in every context frame, so cost grows with r^2, not with h*w.
# Larger tiles waste more products outside the radius but copy fewer overlapping windows; on
# CPUs the copies dominate, and 16 beat 8 by 1.6x at 480p (timed with `propagate` alone).


def tile_queries(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(C, h, w) -> (G, tile*tile, C): non-overlapping tiles (zero padded to whole tiles)."""
    c, h, w = x.shape
    x = F.pad(x, (0, -w % tile, 0, -h % tile))
    cols = F.unfold(x.unsqueeze(0), tile, stride=tile)  # (1, C*t*t, G)
    return cols.view(c, tile * tile, -1).permute(2, 1, 0).contiguous()


def untile(tiles: torch.Tensor, tile: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `tile_queries`: (G, tile*tile, C) -> (C, h, w)."""
    ph, pw = h + (-h % tile), w + (-w % tile)
    c = tiles.shape[-1]
    cols = tiles.permute(2, 1, 0).reshape(1, c * tile * tile, -1)
    return F.fold(cols, (ph, pw), tile, stride=tile)[0, :, :h, :w]


def windows(padded: torch.Tensor, tile: int, radius: int, y0: int, rows: int) -> torch.Tensor:
    """Windows of `rows` tile rows from pixel row y0 of N stacked channel-last maps padded by
    `radius` (and to whole tiles): (N, H', W', C) -> (rows * tiles per row, N * (tile+2r)^2, C).

    The windows are a strided view of the maps, copied once by the final reshape."""
    n, _, wp, c = padded.shape
    size, per_row = tile + 2 * radius, (wp - 2 * radius) // tile
    sn, sh, sw, sc = padded.stride()
    view = padded.as_strided((rows, per_row, n, size, size, c),
                             (tile * sh, tile * sw, sn, sh, sw, sc),
                             padded.storage_offset() + y0 * sh)
    return view.reshape(rows * per_row, n * size * size, c)


def pad_for_windows(x: torch.Tensor, tile: int, radius: int) -> torch.Tensor:
    """Zero-pad (..., h, w) by `radius` on every side, plus up to whole tiles."""
    h, w = x.shape[-2:]
    return F.pad(x, (radius, radius + (-w % tile), radius, radius + (-h % tile)))


@functools.lru_cache(maxsize=16)
def window_mask(h: int, w: int, tile: int, radius: float) -> torch.Tensor:
    """(G, tile*tile, (tile+2r)^2) bool: key inside the image and closer than `radius` cells."""
    r = int(radius)
    size = tile + 2 * r
    ty, tx = torch.meshgrid(torch.arange(0, h + (-h % tile), tile),
                            torch.arange(0, w + (-w % tile), tile), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(size) - r, torch.arange(size) - r, indexing="ij")
    qy, qx, ky, kx = qy.reshape(-1, 1), qx.reshape(-1, 1), ky.reshape(1, -1), kx.reshape(1, -1)
    near = ((ky - qy) ** 2 + (kx - qx) ** 2).float() < radius**2  # (t*t, size*size)
    abs_y = ty.reshape(-1, 1, 1) + ky.unsqueeze(0)  # (G, 1, size*size)
    abs_x = tx.reshape(-1, 1, 1) + kx.unsqueeze(0)
    inside = (abs_y >= 0) & (abs_y < h) & (abs_x >= 0) & (abs_x < w)
    return near.unsqueeze(0) & inside


def propagate(
    query: torch.Tensor,
    memory: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    temperature: float,
    topk: int | None,
    radius: float,
    global_first: bool = True,
    tile: int = 16,
    chunk: int = 16,
) -> torch.Tensor:
    """Labels of one frame by copying from context frames.

    query: (D, h, w) features of the new frame; memory: [(features (D, h, w), labels (C, h, w))],
    the first frame first. Recent frames are searched within `radius` cells; the first frame
    everywhere when `global_first` (CRW), else within the radius too (DINO). radius <= 0 searches
    every frame everywhere. Returns (C, h, w) soft labels.
    """
    d, h, w = query.shape
    if radius <= 0:
        keys = torch.cat([f.flatten(1) for f, _ in memory], dim=1).T.unsqueeze(0)
        values = torch.cat([v.flatten(1) for _, v in memory], dim=1).T.unsqueeze(0)
        q = query.flatten(1).T.unsqueeze(0)
        out = torch.cat([copy_soft(dense_affinity(qc, keys) / temperature, values, topk)
                         for qc in q.split(4096, dim=1)], dim=1)
        return out[0].T.reshape(-1, h, w)
    r = int(radius)
    queries = tile_queries(query, tile)
    per_row = (w + (-w % tile)) // tile
    local = memory[1:] if global_first else memory
    if local:
        feats = pad_for_windows(torch.stack([f for f, _ in local]), tile, r)
        feats = feats.permute(0, 2, 3, 1).contiguous()
        labels = pad_for_windows(torch.stack([v for _, v in local]), tile, r)
        labels = labels.permute(0, 2, 3, 1).contiguous()
        mask = window_mask(h, w, tile, float(radius)).to(query.device).unsqueeze(2)
    if global_first:
        first_keys = memory[0][0].flatten(1).T.unsqueeze(0)
        first_values = memory[0][1].flatten(1).T.unsqueeze(0)
    outputs = []
    rows = max(1, chunk // per_row)
    for row in range(0, queries.shape[0] // per_row, rows):
        g0, g1 = row * per_row, min(queries.shape[0], (row + rows) * per_row)
        n_rows = (g1 - g0) // per_row
        q = queries[g0:g1]
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (G, Q, P, Nk) scores, (G, P, Nk, C)
        if global_first:
            parts.append((dense_affinity(q, first_keys).unsqueeze(2),
                          first_values.unsqueeze(1).expand(len(q), -1, -1, -1)))
        if local:
            scores = dense_affinity(q, windows(feats, tile, r, row * tile, n_rows))
            scores = scores.view(len(q), q.shape[1], len(local), -1)
            scores.masked_fill_(~mask[g0:g1], _FAR)
            values = windows(labels, tile, r, row * tile, n_rows)
            parts.append((scores, values.view(len(q), len(local), -1, values.shape[-1])))
        outputs.append(_copy_parts(parts, temperature, topk))
    return untile(torch.cat(outputs), tile, h, w)


def _copy_parts(parts: list[tuple[torch.Tensor, torch.Tensor]], temperature: float,
                topk: int | None) -> torch.Tensor:
    """`copy_soft` over the union of several reference sets, without concatenating them whole.

    With top-k, each set first keeps its own k best (the k best of a union are among them), so
    only k candidates per set and query are gathered. Returns (G, Q, C).
    """
    if topk is None:
        scores = torch.cat([s.flatten(2) for s, _ in parts], dim=-1)
        values = torch.cat([v.flatten(1, 2) for _, v in parts], dim=1)
        return copy_soft(scores.div_(temperature), values)
    candidates, picked = [], []
    for scores, values in parts:  # scores (G, Q, P, Nk), values (G, P, Nk, C)
        k = min(topk, scores.shape[-1])
        top, index = scores.topk(k, dim=-1)
        g, q, p = index.shape[:3]
        rows = (torch.arange(g).view(g, 1, 1, 1) * p + torch.arange(p).view(1, 1, p, 1)) * (
            values.shape[2])
        flat = values.reshape(-1, values.shape[-1])
        candidates.append(top.flatten(2))
        picked.append(flat[(index + rows).flatten(2)])  # (G, Q, P*k, C)
    scores = torch.cat(candidates, dim=-1)
    values = torch.cat(picked, dim=2)
    g, q, n, c = values.shape
    out = copy_soft(scores.view(g * q, 1, n).div_(temperature), values.view(g * q, n, c), topk)
    return out.view(g, q, c)
