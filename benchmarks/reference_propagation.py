"""A plain reference of the label-propagation protocol, checked against the fast path and timed.

    python benchmarks/reference_propagation.py                  # DAVIS `dog`, first 15 frames
    python benchmarks/reference_propagation.py --quick          # first 6 frames (< 1 minute)
    python benchmarks/reference_propagation.py --sequence parkour --frames 25 --set topk=5

The reference is `colortrack.copy.reference.propagate`, the protocol written plainly (what
CRW's test.py does): every frame embedded first (the same `FrameEncoder.stream`), then each
target scored densely against frame 0 and the last `context` predictions, keys out of reach
masked, top k over all of them jointly, softmax, weighted sum of their labels. No tiles or
windows.

The script runs it and `LearnedPropagator.propagate` on the same frames and prints the largest
difference of the soft labels (upsampled to the frame), whether the argmax masks agree, and
frames/s of both (whole pipeline, and the copy step alone: the library's `copy`
stage label).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import colortrack.track.propagator as learned
from colortrack.config import PropagationConfig, override
from colortrack.copy import reference
from colortrack.data.davis import DavisDataset
from colortrack.eval.metrics import VOID_ID
from colortrack.model.device import this_cpu
from colortrack.model.network import Encoder
from colortrack.stages import timed

ROOT = Path(__file__).resolve().parents[1]
# The benchmark folder (docs/data.md): $COLORTRACK_DATA, else ./data.
DAVIS = Path(os.environ.get("COLORTRACK_DATA", "data")) / "davis2016-dev"


def clock() -> float:
    """Wall time, after the GPU's queued kernels have run (when CUDA is in use)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


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
          f"({len(frames) - 1} propagated), {this_cpu()}, {torch.get_num_threads()} torch "
          f"threads; {cfg}")

    start = clock()
    fast = list(propagator.propagate(iter(frames), first))
    fast_total = clock() - start
    # The copy step's own time, from its label inside the library, in a second run.
    with timed() as stages:
        list(propagator.propagate(iter(frames), first))
    copy_seconds = stages["copy"]

    start = clock()
    features = list(propagator.frames.stream(iter(frames)))
    encode = clock() - start
    grid0 = learned.labels_to_grid(first, Encoder.stride, features[0].device)
    start = clock()
    grids = reference.propagate(features, grid0, cfg)
    ref_copy = clock() - start
    plain = [learned.grid_to_labels(g, Encoder.stride, height, width) for g in grids]
    ref_total = clock() - start + encode

    diff_full = max(float(np.abs(a - b).max()) for a, b in zip(fast, plain, strict=True))
    same = [bool((a.argmax(0) == b.argmax(0)).all()) for a, b in zip(fast, plain, strict=True)]
    changed = sum(int((a.argmax(0) != b.argmax(0)).sum()) for a, b in zip(fast, plain,
                                                                             strict=True))
    print(f"max |fast - reference| of the soft labels: {diff_full:.2e} (upsampled to "
          f"{width}x{height})")
    print(f"argmax masks identical: {all(same)} ({sum(same)}/{len(same)} frames, "
          f"{changed} pixels differ)")
    n = len(frames) - 1
    print(f"{'path':<11}{'s total':>9}{'frames/s':>10}{'copy s':>9}{'copy frames/s':>15}")
    for name, total, copy in (("reference", ref_total, ref_copy), ("fast", fast_total,
                                                                    copy_seconds)):
        print(f"{name:<11}{total:>9.1f}{n / total:>10.3f}{copy:>9.1f}{n / copy:>15.3f}")
    print(f"speed-up of the fast path: {ref_total / fast_total:.1f}x overall, "
          f"{ref_copy / copy_seconds:.1f}x on the copy step (totals include embedding and "
          "upsampling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
