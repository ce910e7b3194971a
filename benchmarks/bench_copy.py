"""The copy step alone (`colortrack.copy.propagate`) at 480p, by radius, tile size and chunk budget.

    python benchmarks/bench_copy.py                         # DAVIS `dog`, 20 frames
    python benchmarks/bench_copy.py --radius 8,12 --tile 4x10,8x8,4 --budget 262144,1048576
    python benchmarks/bench_copy.py --set global_first=true --radius 12

The shipped model tracks the first frames of a DAVIS sequence with each setting; every call of
the copy step is repeated `--repeat` times and its median kept, so the table is steadier than an
end-to-end run. Rows give the mean over frames of those medians (ms per frame) and the share of
query tiles answered without scoring (all references carry one label).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import colortrack.track.propagator as learned
from colortrack.config import PropagationConfig, override
from colortrack.copy.context import Context
from colortrack.copy.propagate import propagate
from colortrack.copy.windows import TILE, Tile
from colortrack.data.davis import DavisDataset
from colortrack.eval.metrics import VOID_ID
from colortrack.model.device import this_cpu
from colortrack.model.network import Encoder

ROOT = Path(__file__).resolve().parents[1]
# The benchmark folder (docs/data.md): $COLORTRACK_DATA, else ./data.
DAVIS = Path(os.environ.get("COLORTRACK_DATA", "data")) / "davis2016-dev"


def measure(frames: list[np.ndarray], first: np.ndarray, cfg: PropagationConfig, tile: Tile,
            budget: int, repeat: int, device: str = "cpu") -> tuple[float, float]:
    """(mean over frames of the median ms of one copy, share of tiles skipped).

    The tracking loop of `LearnedPropagator.propagate`, written out so that the copy step can be
    given its tile and budget and repeated: embed, copy from the Context, append."""
    propagator = learned.LearnedPropagator.from_checkpoint(None, cfg, device)
    times: list[float] = []
    skipped: list[float] = []
    context = None
    for embedding in propagator.frames.stream(iter(frames)):
        key, query = propagator.key_query(embedding)
        if context is None:
            labels = learned.labels_to_grid(first, Encoder.stride, embedding.device)
            context = Context(key, labels, recent=cfg.context, radius=cfg.radius,
                              global_first=cfg.global_first, scoring=propagator.scoring_for(key),
                              tile=tile, int8_in_float=propagator.int8_in_float)
            continue
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            grid = propagate(query, context, temperature=cfg.temperature, topk=cfg.topk,
                             budget=budget)
            if query.is_cuda:
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        times.append(statistics.median(runs))
        if not context.global_first:
            skipped.append(float(context.constant_tiles()[0].float().mean()))
        context.append(key, grid)
    return 1e3 * statistics.mean(times), statistics.mean(skipped) if skipped else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS root")
    parser.add_argument("--sequence", default="dog")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--radius", default="8,12", help="comma-separated radii (cells)")
    parser.add_argument("--tile", default="4x10,8x8", help="comma-separated tile sizes: "
                        "ROWSxCOLUMNS, or one side for a square")
    parser.add_argument("--budget", default=str(1 << 20), help="comma-separated scores/chunk")
    parser.add_argument("--repeat", type=int, default=3, help="calls per frame (median kept)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DavisDataset(args.davis, sequences=[args.sequence])
    paths = dataset.frame_paths(args.sequence)[: args.frames]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    ids = dataset.first_mask(args.sequence)
    ids[ids == VOID_ID] = 0
    first = (ids[None] == np.unique(ids)[:, None, None]).astype(np.float32)
    base = override(PropagationConfig(), args.set)
    h, w = ids.shape
    if args.device.startswith("cuda"):  # CUDA context and allocator: not timed
        measure(frames[:3], first, base, TILE, 1 << 20, 1, args.device)
    print(f"DAVIS {args.sequence}, {w}x{h}, {len(frames)} frames, device {args.device}, "
          f"{this_cpu()}, {torch.get_num_threads()} torch threads, median of {args.repeat} "
          f"calls per frame; "
          f"{base}")
    print(f"{'radius':>6}{'tile':>6}{'budget':>10}{'copy ms/frame':>15}{'tiles skipped':>15}")
    grid = itertools.product(args.radius.split(","), args.tile.split(","),
                             args.budget.split(","))
    for radius, tile, budget in grid:
        cfg = override(base, [f"radius={radius}"])
        rows, _, cols = tile.partition("x")
        ms, skipped = measure(frames, first, cfg, (int(rows), int(cols or rows)), int(budget),
                              args.repeat, args.device)
        print(f"{radius:>6}{tile:>6}{budget:>10}{ms:>15.1f}{100 * skipped:>14.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
