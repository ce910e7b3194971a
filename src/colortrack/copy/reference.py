"""The copy operator and the tracking protocol, defined plainly: the spec of the fast path.

Training predicts a gray target's colors, and tracking a new frame's labels, the same way: each
target location j copies the values v_i (color classes; masks or keypoint heatmaps) of reference
locations i, weighted by the softmax of their embeddings' affinity,

    y_j = sum_i A_ij v_i,    A_ij = softmax_i(f_i . f_j / T),

over each target's k best references only, with `topk` (CRW). Tracking takes as references
frame 0 with its given labels and its last `context` predictions, each searched within `radius`
cells of j (frame 0 everywhere with `global_first`). `propagate.py` computes the same in tiles
and windows, in lower precision where that only chooses the top k, and in a C kernel; the tests
hold it to this file.
"""

from __future__ import annotations

import torch

from colortrack.config import PropagationConfig

FAR = -1e9  # the score of a reference out of reach: finite, so a softmax never sees only -inf


def dense_affinity(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(G, Nq, D) x (G or 1, Nk, D) -> (G, Nq, Nk): every query's dot product with every key."""
    return torch.matmul(query, keys.transpose(-1, -2))


def copy_soft(scores: torch.Tensor, values: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Copy values through softmax(scores): scores (G, Nq, Nk), values (G|1, Nk, C) -> (G, Nq, C),
    over each query's `topk` best references where given."""
    if topk is None or topk >= scores.shape[-1]:
        return torch.matmul(torch.softmax(scores, dim=-1), values)
    top, index = scores.topk(topk, dim=-1)  # (G, Nq, k)
    groups = torch.arange(len(scores), device=scores.device).view(-1, 1, 1)
    picked = values.expand(len(scores), -1, -1)[groups, index]  # (G, Nq, k, C)
    return torch.einsum("gqk,gqkc->gqc", torch.softmax(top, dim=-1), picked)


def out_of_reach(h: int, w: int, radius: float, device: torch.device) -> torch.Tensor:
    """(h*w, h*w) bool: the key cell lies `radius` cells or farther from the query cell."""
    ys, xs = (c.flatten() for c in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    squared = (ys[:, None] - ys) ** 2 + (xs[:, None] - xs) ** 2  # exact, in integers
    return (squared >= radius**2).to(device)


@torch.inference_mode()
def propagate(features: list[torch.Tensor], first_labels: torch.Tensor, cfg: PropagationConfig,
              block: int = 1024) -> list[torch.Tensor]:
    """Labels (C, h, w) of frames 1.. from the features (D, h, w) of frames 0.. and frame 0's
    labels (C, h, w). Queries go `block` rows at a time only to bound memory."""
    d, h, w = features[0].shape
    far = out_of_reach(h, w, cfg.radius, features[0].device) if cfg.radius > 0 else None
    keys = [f.reshape(d, h * w).T for f in features]  # (hw, D) per frame
    labels = [first_labels.reshape(-1, h * w).T]  # (hw, C) per frame: given, then predicted
    for t in range(1, len(features)):
        context = [0, *range(max(1, t - cfg.context), t)]
        rows = []
        for start in range(0, h * w, block):
            scores = []
            for i in context:
                s = dense_affinity(keys[t][start:start + block], keys[i])
                if far is not None and (i > 0 or not cfg.global_first):
                    s = s.masked_fill(far[start:start + block], FAR)
                scores.append(s)
            values = torch.cat([labels[i] for i in context])[None]
            rows.append(copy_soft(torch.cat(scores, 1)[None] / cfg.temperature, values, cfg.topk))
        labels.append(torch.cat(rows, 1)[0])
    return [x.T.reshape(-1, h, w) for x in labels[1:]]
