"""The Python binding of the native copy kernel (_window.c), built by setup.py where it can be.

`copy_windows` does in one pass per query what `propagate`'s PyTorch path does from the int32
window scores on (top-k, float32 rescoring, softmax, weighted mean); `kernel` is None where the
kernel was not built, and that path runs instead. The tests hold both to the same definition.
"""

from __future__ import annotations

import torch

from colortrack.copy.reference import FAR

# Imported after torch, so that an OpenMP build shares the OpenMP runtime PyTorch loaded.
try:
    from colortrack.copy import _window as kernel
except ImportError:
    kernel = None

# The kernel's instruction set: its best on this CPU (2 AVX-512, 1 AVX2, 0 portable C); lower
# only to test the other paths.
LEVEL = kernel.best_level() if kernel is not None else 0


def copy_windows(scores: torch.Tensor | None, biases: torch.Tensor, kind: torch.Tensor,
                 queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 corners: torch.Tensor, offsets: torch.Tensor, k: int, temperature: float,
                 out: torch.Tensor, level: int | None = None,
                 products: tuple[torch.Tensor, torch.Tensor, int, int] | None = None
                 ) -> None:
    """The native kernel (_window.c): what the PyTorch path does from the int32 window scores
    on, in one pass per query, written into `out` (G, Q, C). For tile g and query q: scores[g, q]
    (frames * cells) plus biases[kind[g], q] (K, Q, 1, cells) of each frame, its k best (ties to
    the lower index), those rescored as queries[g, q] . keys[r] in float32, with r = corners[g] +
    offsets[i] for window cell i, then softmax(score / temperature) over values[r] (N, C).

    With `scores` None, the kernel makes them itself, tile by tile while they are in cache,
    from `products`: int8 values held as float32 integers, the prepared queries (G, Q, D) and
    the keys (slots, rows, D, columns) of a Context with `int8_in_float` (the same int32 sums
    as `Context.scores`), the frames searched and the rows of a window. The kernel reads raw
    memory, so shapes, dtypes and layouts are checked here first."""
    if kernel is None:
        raise RuntimeError("colortrack.copy._window is not built in this installation (reinstall "
                           "with a C compiler); propagate() runs the same copy in PyTorch")
    if (scores is None) == (products is None):
        raise ValueError("copy_windows: pass either scores or products")
    made = products[:2] if products is not None else ()
    expected = [(biases, torch.int32), (kind, torch.int64), (queries, torch.float32),
                (keys, torch.float32), (values, torch.float32), (corners, torch.int64),
                (offsets, torch.int64), (out, torch.float32),
                *((t, torch.float32) for t in made),
                *(((scores, torch.int32),) if scores is not None else ())]
    for tensor, dtype in expected:
        if tensor.dtype != dtype or tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ValueError(f"copy_windows: got a {tensor.dtype} {tensor.device} tensor of "
                             f"strides {tensor.stride()}, needs a contiguous {dtype} on cpu")
    (g, q, d), cells, c = queries.shape, biases.shape[-1], values.shape[-1]
    if scores is not None:
        frames = scores.shape[-1] // max(cells, 1)
        fits = scores.shape == (g, q, frames * cells)
        extra = {}
    else:
        prepared, scored, frames, rows = products
        slots, height, _, width = scored.shape
        fits = (prepared.shape == queries.shape and scored.shape[2] == d and 0 < rows <= height
                and cells % rows == 0 and cells // rows <= width and 0 < frames <= slots
                and slots * height * width == len(keys))
        extra = {"pq": prepared.data_ptr(), "pk": scored.data_ptr(), "height": height,
                 "width": width, "window_rows": rows, "window_cols": cells // max(rows, 1)}
    fits = (fits and biases.shape[1:] == (q, 1, cells) and keys.shape[1] == d
            and len(values) == len(keys) and out.shape == (g, q, c)
            and len(kind) == len(corners) == g and len(offsets) >= frames * cells)
    if not fits:
        given = "products" if scores is None else f"scores {tuple(scores.shape)}"
        raise ValueError(f"copy_windows: {given}, biases {tuple(biases.shape)}, queries "
                         f"{tuple(queries.shape)}, keys {tuple(keys.shape)}, values "
                         f"{tuple(values.shape)} and out {tuple(out.shape)} do not fit together")
    kernel.copy_windows(
        scores=scores.data_ptr() if scores is not None else 0, rows=g * q, frames=frames,
        cells=cells, bias=biases.data_ptr(), kinds=len(biases), kind=kind.data_ptr(),
        per_tile=q, k=k, temperature=temperature, far=int(FAR), queries=queries.data_ptr(),
        dim=d, keys=keys.data_ptr(), values=values.data_ptr(), entries=len(keys), channels=c,
        corners=corners.data_ptr(), offsets=offsets.data_ptr(), out=out.data_ptr(),
        level=LEVEL if level is None else level, **extra)
