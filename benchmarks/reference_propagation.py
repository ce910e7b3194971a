"""A plain reference of the label-propagation protocol, checked against the fast path and timed.

    python benchmarks/reference_propagation.py                  # DAVIS `dog`, first 15 frames
    python benchmarks/reference_propagation.py --quick          # first 6 frames (< 1 minute)
    python benchmarks/reference_propagation.py --sequence parkour --frames 25 --set topk=5

The reference does what CRW's test.py does, the straightforward way: embed every frame first
(the same `FrameEncoder.stream`), then for each target frame score it densely against every
context frame (frame 0 with its given labels, then the last `context` predictions), set the
scores of keys `radius` cells or farther to -1e9 for the recent frames (and for frame 0 too
unless `global_first`), divide by the temperature, keep the top k over all context jointly,
softmax, and sum the keys' labels with those weights. No tiles or windows; queries are only
split into row blocks to bound memory, which changes nothing in the result.

The script runs it and `LearnedPropagator.propagate` on the same frames and prints the largest
difference of the soft labels (at feature resolution and upsampled to the frame), whether the
argmax masks agree, and frames/s of both (whole pipeline, and the copy step alone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import colortrack.track.propagator as learned
from colortrack.config import PropagationConfig, override
from colortrack.data.davis import DavisDataset
from colortrack.eval.metrics import VOID_ID
from colortrack.model.network import Encoder

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-dev"
FAR = -1e9


def clock() -> float:
    """Wall time, after the GPU's queued kernels have run (when CUDA is in use)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def outside_radius(h: int, w: int, radius: float) -> torch.Tensor:
    """(h*w, h*w) bool: key cell at distance >= radius from query cell (in feature cells)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    squared = (ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2
    return squared.float() >= radius**2


@torch.inference_mode()
def reference_propagate(features: list[torch.Tensor], first_labels: torch.Tensor,
                        cfg: PropagationConfig, block: int = 1024) -> list[torch.Tensor]:
    """Soft labels (C, h, w) of frames 1.. from precomputed (D, h, w) features of frames 0..

    `first_labels` (C, h, w) are frame 0's labels at feature resolution.
    """
    d, h, w = features[0].shape
    far = outside_radius(h, w, cfg.radius).to(features[0].device) if cfg.radius > 0 else None
    keys = [f.reshape(d, h * w) for f in features]  # (D, hw) each
    labels = [first_labels.reshape(-1, h * w).T]  # (hw, C) per frame, frame 0 given
    outputs = []
    for t in range(1, len(features)):
        context = [0, *range(max(1, t - cfg.context), t)]
        restricted = [far is not None and (i > 0 or not cfg.global_first) for i in context]
        values = torch.cat([labels[i] for i in context])  # (M*hw, C)
        query = keys[t].T  # (hw, D)
        rows = []
        for start in range(0, h * w, block):
            q = query[start:start + block]
            parts = []
            for i, masked in zip(context, restricted, strict=True):
                scores = q @ keys[i]  # (b, hw): every query against every key of frame i
                if masked:
                    scores = scores.masked_fill(far[start:start + block], FAR)
                parts.append(scores)
            scores = torch.cat(parts, dim=1) / cfg.temperature  # (b, M*hw)
            if cfg.topk is not None and cfg.topk < scores.shape[1]:
                top, index = scores.topk(cfg.topk, dim=1)
                weights = torch.softmax(top, dim=1)  # (b, k)
                rows.append(torch.einsum("bk,bkc->bc", weights, values[index]))
            else:
                rows.append(torch.softmax(scores, dim=1) @ values)
        out = torch.cat(rows)  # (hw, C)
        labels.append(out)
        outputs.append(out.T.reshape(-1, h, w))
    return outputs


def load_frames(root: Path, sequence: str, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first `count` RGB frames of a DAVIS sequence and frame 0's one-hot labels (K, H, W)."""
    dataset = DavisDataset(root, sequences=[sequence])
    frames = [np.array(Image.open(p).convert("RGB")) for p in dataset.frame_paths(sequence)[:count]]
    ids = dataset.first_mask(sequence)
    ids[ids == VOID_ID] = 0
    present = np.unique(ids)
    lookup = np.concatenate([[0], present[present != 0]])
    return frames, (ids[None] == lookup[:, None, None]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS root")
    parser.add_argument("--sequence", default="dog")
    parser.add_argument("--frames", type=int, help="frames from frame 0 (default 15)")
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="propagation setting (repeatable)")
    parser.add_argument("--quick", action="store_true", help="6 frames only")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    args = parser.parse_args(argv)
    cfg = override(PropagationConfig(), args.set)
    count = args.frames or (6 if args.quick else 15)
    frames, first = load_frames(args.davis, args.sequence, count)
    height, width = first.shape[1:]
    propagator = learned.LearnedPropagator.from_checkpoint(args.model, cfg, args.device)
    if args.device.startswith("cuda"):  # CUDA context, cuDNN plans, allocator: not timed
        list(propagator.propagate(iter(frames[:3]), first))
    if propagator.metric != "dot":
        raise SystemExit("the reference covers the dot-product metric of the learned model")
    print(f"DAVIS {args.sequence}, {width}x{height}, {len(frames)} frames "
          f"({len(frames) - 1} propagated), {torch.get_num_threads()} torch threads; {cfg}")

    copy_seconds, fast_grids = [0.0], []
    fast_copy = learned.propagate

    def timed_copy(*a: object, **k: object) -> torch.Tensor:
        start = clock()
        grid = fast_copy(*a, **k)
        copy_seconds[0] += clock() - start
        fast_grids.append(grid)
        return grid

    learned.propagate = timed_copy
    try:
        start = clock()
        fast = list(propagator.propagate(iter(frames), first))
        fast_total = clock() - start
    finally:
        learned.propagate = fast_copy

    start = clock()
    features = list(propagator.frames.stream(iter(frames)))
    encode = clock() - start
    grid0 = learned.labels_to_grid(first, Encoder.stride, features[0].device)
    start = clock()
    grids = reference_propagate(features, grid0, cfg)
    ref_copy = clock() - start
    reference = [learned.grid_to_labels(g, Encoder.stride, height, width) for g in grids]
    ref_total = clock() - start + encode

    diff_grid = max(float((a - b).abs().max()) for a, b in zip(fast_grids, grids, strict=True))
    diff_full = max(float(np.abs(a - b).max()) for a, b in zip(fast, reference, strict=True))
    same = [bool((a.argmax(0) == b.argmax(0)).all()) for a, b in zip(fast, reference, strict=True)]
    changed = sum(int((a.argmax(0) != b.argmax(0)).sum()) for a, b in zip(fast, reference,
                                                                             strict=True))
    print(f"max |fast - reference| of the soft labels: {diff_grid:.2e} at feature resolution, "
          f"{diff_full:.2e} upsampled to {width}x{height}")
    print(f"argmax masks identical: {all(same)} ({sum(same)}/{len(same)} frames, "
          f"{changed} pixels differ)")
    n = len(frames) - 1
    print(f"{'path':<11}{'s total':>9}{'frames/s':>10}{'copy s':>9}{'copy frames/s':>15}")
    for name, total, copy in (("reference", ref_total, ref_copy), ("fast", fast_total,
                                                                    copy_seconds[0])):
        print(f"{name:<11}{total:>9.1f}{n / total:>10.3f}{copy:>9.1f}{n / copy:>15.3f}")
    print(f"speed-up of the fast path: {ref_total / fast_total:.1f}x overall, "
          f"{ref_copy / copy_seconds[0]:.1f}x on the copy step (totals include embedding and "
          "upsampling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
