"""Peak memory of tracking a synthetic video, by length: it must not grow with the video.

    python benchmarks/bench_memory.py                         # 100, 1000, 5000 frames at 854x480
    python benchmarks/bench_memory.py --quick           # 10, 30, 90 frames, 240x136, context 5
    python benchmarks/bench_memory.py --lengths 20,100,400 --size 240x136   # ~10 min on 2 cores
    python benchmarks/bench_memory.py --lengths 50,500 --size 424x240 --set context=10

Each length runs in a fresh subprocess (this script with --child) that tracks a moving random
texture, generated frame by frame (no file is written), with the default model through
`Tracker.track_frames`, and reports its RSS high-water mark (VmHWM) and its RSS just before
tracking (after imports and loading the model). The table gives length -> peak MB -> ratio to
the first length's peak. Memory is bounded by the context (first frame + `context` recent
frames), so the peak should stop growing once the video is longer than the context; --quick uses
context=5 (unless --set context=... is given) so that its short videos already pass it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def synthetic_video(length: int, width: int, height: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`length` RGB frames of a smooth random texture drifting along a circle (bounded state)."""
    rng = np.random.default_rng(seed)
    margin = 32
    coarse = rng.integers(0, 256, ((height + 2 * margin) // 8 + 1, (width + 2 * margin) // 8 + 1,
                                   3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))  # 8x8 color blocks
    for t in range(length):
        angle = 2 * np.pi * t / 97
        y = int(margin + margin * 0.9 * np.sin(angle))
        x = int(margin + margin * 0.9 * np.cos(angle))
        yield np.ascontiguousarray(texture[y:y + height, x:x + width])


def child(length: int, width: int, height: int, settings: list[str],
          device: str = "cpu") -> dict[str, float]:
    """Track one synthetic video in this process; returns memory (MB) and time figures."""
    import torch

    from colortrack.config import PropagationConfig, override
    from colortrack.track.tracking import Tracker

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tracker = Tracker.from_pretrained(propagation=override(PropagationConfig(), settings),
                                      device=device)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4:3 * height // 4, width // 3:2 * width // 3] = 1
    before = status_mb("VmRSS")
    started, count = time.perf_counter(), 0
    for _, _, ids in tracker.track_frames(synthetic_video(length, width, height), mask):
        count += int(ids.shape[0] > 0)
    seconds = time.perf_counter() - started
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return {"length": count, "before_mb": before, "peak_mb": status_mb("VmHWM"),
            "end_mb": status_mb("VmRSS"), "s_per_frame": seconds / count, "gpu_peak_mb": gpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default=None, help="comma-separated frame counts "
                        "(default 100,1000,5000; --quick 10,30,90)")
    parser.add_argument("--size", default=None, help="WxH (default 854x480; --quick 240x136)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="propagation setting (repeatable)")
    parser.add_argument("--quick", action="store_true", help="short videos at a reduced size")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda (adds the peak "
                        "of GPU memory allocated)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or ("240x136" if args.quick else "854x480")
    width, height = (int(v) for v in size.lower().split("x"))
    if args.child is not None:
        print(json.dumps(child(args.child, width, height, args.set, args.device)))
        return 0
    if args.quick and not any(s.startswith("context") for s in args.set):
        args.set.append("context=5")
    lengths = [int(v) for v in (args.lengths or ("10,30,90" if args.quick
                                                  else "100,1000,5000")).split(",")]
    gpu = args.device.startswith("cuda")
    print(f"synthetic {width}x{height} video, default model, device {args.device}, settings "
          f"{args.set or 'default'}; each length in a fresh process")
    print(f"{'frames':>7}{'RSS before (MB)':>17}{'peak (MB)':>11}{'peak - before':>15}"
          f"{'ratio':>7}{'s/frame':>9}" + (f"{'GPU peak (MB)':>15}{'ratio':>7}" if gpu else ""))
    first = first_gpu = None
    for length in lengths:
        command = [sys.executable, __file__, "--child", str(length), "--size", size,
                   "--device", args.device]
        command += [f"--set={s}" for s in args.set]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        first, first_gpu = first or r["peak_mb"], first_gpu or r["gpu_peak_mb"]
        extra = (f"{r['gpu_peak_mb']:>15.0f}{r['gpu_peak_mb'] / first_gpu:>7.2f}" if gpu else "")
        print(f"{r['length']:>7}{r['before_mb']:>17.0f}{r['peak_mb']:>11.0f}"
              f"{r['peak_mb'] - r['before_mb']:>15.0f}{r['peak_mb'] / first:>7.2f}"
              f"{r['s_per_frame']:>9.3f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
