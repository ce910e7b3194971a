"""Local windows: how tracking scores only the references within the radius.

Queries are cut into tiles of th x tw cells; each tile scores one window around it in every
windowed context frame, th + 2e rows by tw + 2e columns with e = `reach(radius)`, the columns
rounded up to a multiple of 8 so that rows of scores split into whole blocks for `fast_topk`
(the extra columns are out of reach). The cost grows with r^2, not with the frame's h*w; scores
outside a query's radius get FAR from `window_bias`, so the copy is the reference's
(`reference.propagate` masks the same keys). docs/performance.md measures the tile shape.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from colortrack.copy.reference import FAR

Tile = tuple[int, int]
TILE: Tile = (4, 10)  # wide tiles: fewer wasted products per window than square ones at r = 12
# Where the native kernel makes float32 products (CPUs without VNNI): a tile's 30 queries are
# whole blocks of its 3-query FMAs and its scores nearer L2's size (docs/performance.md).
TILE_IN_FLOAT: Tile = (3, 10)


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
