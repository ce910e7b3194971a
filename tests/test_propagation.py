"""The copy operator against a naive dense implementation written from the definition."""

import pytest
import torch

from colortrack.propagation import copy_soft, propagate, tile_queries, untile


def naive_propagate(query, memory, temperature, topk, radius, global_first):
    d, h, w = query.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    dist = torch.cdist(pos, pos)  # (N, N)
    out = torch.zeros(memory[0][1].shape[0], h * w)
    for j in range(h * w):
        scores, values = [], []
        for i, (feat, labels) in enumerate(memory):
            s = feat.flatten(1).T @ query.flatten(1)[:, j]
            if radius > 0 and not (global_first and i == 0):
                s = torch.where(dist[j] < radius, s, torch.tensor(-1e9))
            scores.append(s)
            values.append(labels.flatten(1).T)
        s = torch.cat(scores) / temperature
        v = torch.cat(values)
        if topk is not None:
            top, idx = s.topk(topk)
            out[:, j] = torch.softmax(top, 0) @ v[idx]
        else:
            out[:, j] = torch.softmax(s, 0) @ v
    return out.view(-1, h, w)


@pytest.mark.parametrize("radius,global_first,topk,frames", [
    (3, True, 5, 3), (2.5, False, 4, 3), (0, True, 7, 3), (4, True, None, 3), (3, True, 5, 1),
    (3, False, 5, 1)])
def test_propagate_matches_naive(radius, global_first, topk, frames):
    torch.manual_seed(0)
    h, w = 11, 13  # not multiples of the tile: padding must be invisible
    memory = [(torch.randn(6, h, w), torch.rand(3, h, w)) for _ in range(frames)]
    query = torch.randn(6, h, w)
    fast = propagate(query, memory, temperature=0.5, topk=topk, radius=radius,
                     global_first=global_first, tile=4, chunk=5)
    slow = naive_propagate(query, memory, 0.5, topk, radius, global_first)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_copy_soft_is_a_weighted_average_of_values():
    scores = torch.tensor([[[0.0, 0.0, 100.0]]])
    values = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(copy_soft(scores, values), torch.tensor([[[0.0, 1.0]]]), atol=1e-6)
    equal = copy_soft(torch.zeros(1, 1, 3), values, topk=2)
    assert torch.allclose(equal.sum(-1), torch.ones(1, 1))


def test_tiles_round_trip():
    x = torch.randn(5, 9, 14)
    assert torch.equal(untile(tile_queries(x, 4), 4, 9, 14), x)
