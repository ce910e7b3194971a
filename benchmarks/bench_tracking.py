"""End-to-end tracking speed at 480p, with a per-stage breakdown (wall time per frame).

    python benchmarks/bench_tracking.py                      # DAVIS `dog`, model + flow + identity
    python benchmarks/bench_tracking.py --quick              # first 12 frames (< 1 minute)
    python benchmarks/bench_tracking.py --sequence parkour --frames 40 --set context=10
    python benchmarks/bench_tracking.py --video clip.mp4 --mask first.png --methods model
    python benchmarks/bench_tracking.py --radii 12,8,6,4   # the model at several radii

The real code path of `colortrack track` is timed in-process (`tracking.track_to_dir`: palette PNGs
and the overlay video); `bench_cli.py` times the command itself. The stages come from the library's
stage clock (`colortrack.stages.timed`) in a second run: encoder (L + trunk + one cached head
step), copy, upsample, argmax, PNG and overlay (drawing the mask and H.264-encoding the frame). The
model's encoder runs on its own thread, one frame ahead of the copy, the PNG and overlay on a
writer thread, and decoding (JPEG/PyAV) on another; none of these is part of the sum, which is the
main thread's stages, and decoding is timed in a separate decode-only pass. "rest" is the main
thread's wall time outside its stages (Python glue, waiting for the next embedding or frame,
opening and closing the outputs). For `flow` its whole propagator step is in the `copy` column.
Wall times are noisy when other jobs share the CPU, so every row is run in each of `--repeat`
rounds and its fastest run shown, the usual estimate of what the code costs without interference; a
slow spell then touches every row of a round alike.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colortrack.config import PropagationConfig, override
from colortrack.data.annotations import read_mask
from colortrack.data.davis import DavisDataset
from colortrack.data.video import VideoReader
from colortrack.eval.metrics import VOID_ID
from colortrack.model.device import this_cpu
from colortrack.stages import timed
from colortrack.track.tracking import Tracker, track_to_dir

ROOT = Path(__file__).resolve().parents[1]
# The benchmark folder (docs/data.md): $COLORTRACK_DATA, else ./data.
DAVIS = Path(os.environ.get("COLORTRACK_DATA", "data")) / "davis2016-dev"
# Columns and the library's stage labels they sum; for the flow baseline, `flow` is its whole
# propagator step and goes under `copy`. Starred columns run on threads of their own (the
# encoder's, the writer's); the others, on the main thread.
STAGES = {"encoder*": ("encode",), "copy": ("copy", "flow"), "upsample": ("upsample",),
          "argmax": ("argmax",), "png*": ("write",), "overlay*": ("overlay",)}


def davis_inputs(root: Path, sequence: str) -> tuple[list[Path], np.ndarray]:
    """Frame paths and the first mask (void pixels as background, as `bench davis` does)."""
    dataset = DavisDataset(root, sequences=[sequence])
    first = dataset.first_mask(sequence)
    first[first == VOID_ID] = 0
    return dataset.frame_paths(sequence), first


def decoded(source: list[Path] | Path, limit: int | None) -> Iterator[np.ndarray]:
    """Frames decoded one at a time (JPEG files or a video file)."""
    if isinstance(source, list):
        for path in source[:limit]:
            with Image.open(path) as image:
                yield np.asarray(image.convert("RGB"))
        return
    with VideoReader(source) as reader:
        yield from itertools.islice(iter(reader), limit)


def run(method: str, source: list[Path] | Path, mask: np.ndarray, limit: int | None,
        propagation: PropagationConfig | None, device: str) -> tuple[int, float, dict[str, float]]:
    """Track and write as `colortrack track` does; returns (frames, wall seconds, seconds per
    stage). The wall time is of a first run; the stages, of a second, from the library's stage
    clock (colortrack.stages.timed)."""
    tracker = Tracker.from_pretrained(method=method, propagation=propagation, device=device)
    with tempfile.TemporaryDirectory() as out:
        started = clock()
        count = track_to_dir(tracker, decoded(source, limit), mask, out, progress=False).frames
        wall = clock() - started
        with timed() as labels:
            track_to_dir(tracker, decoded(source, limit), mask, out, overwrite=True,
                         progress=False)
    seconds = {column: sum(labels.get(label, 0.0) for label in parts)
               for column, parts in STAGES.items()}
    return count, wall, seconds


def clock() -> float:
    """Wall time, after the GPU's queued kernels have run (when CUDA is in use)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def decode_seconds(source: list[Path] | Path, limit: int | None) -> float:
    """Seconds per frame to decode alone (what the background thread does)."""
    started, count = time.perf_counter(), 0
    for _ in decoded(source, limit):
        count += 1
    return (time.perf_counter() - started) / max(count, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS root")
    parser.add_argument("--sequence", default="dog", help="DAVIS sequence (default dog)")
    parser.add_argument("--video", type=Path, help="a video file instead of DAVIS (needs --mask)")
    parser.add_argument("--mask", type=Path, help="first-frame mask PNG for --video")
    parser.add_argument("--frames", type=int, help="use only the first N frames")
    parser.add_argument("--methods", default="model,flow,identity", help="comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="propagation setting for the model (repeatable)")
    parser.add_argument("--radii", help="comma-separated radii: one model row for each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="first 12 frames only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest shown")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = args.frames or (12 if args.quick else None)
    if args.video is not None:
        if args.mask is None:
            parser.error("--video needs --mask")
        source: list[Path] | Path = args.video
        mask, name = read_mask(args.mask), args.video.name
    else:
        source, mask = davis_inputs(args.davis, args.sequence)
        name = f"DAVIS {args.sequence}"
    propagation = override(PropagationConfig(), args.set)
    h, w = mask.shape
    print(f"{name}, {w}x{h}, {limit or 'all'} frames, device {args.device}, "
          f"{this_cpu()}, {torch.get_num_threads()} torch threads; {propagation}")
    print(f"ms per frame (frame 0 included; end-to-end = wall time / frames; fastest of "
          f"{args.repeat} runs):")
    decode = decode_seconds(source, limit)
    head = f"{'method':<9}{'decode*':>9}" + "".join(f"{c:>11}" for c in STAGES)
    print(head + f"{'sum':>9}{'rest':>7}{'end-to-end':>12}{'frames/s':>10}")
    rows = []
    for method in args.methods.split(","):
        if method == "model" and args.radii:
            rows += [(f"model r{r}", override(propagation, [f"radius={r}"]))
                     for r in args.radii.split(",")]
        else:
            rows.append((method, propagation if method == "model" else None))
    if args.device.startswith("cuda"):  # CUDA context, cuDNN plans, allocator: not timed
        for label, settings in rows:
            run(label.split()[0], source, mask, 3, settings, args.device)
    # Rounds over all rows, so that a slow spell of the machine hits every row alike.
    rounds = [[run(label.split()[0], source, mask, limit, settings, args.device)
               for label, settings in rows] for _ in range(args.repeat)]
    ms = {}
    for (label, _), runs in zip(rows, zip(*rounds, strict=True), strict=True):
        count, wall, seconds = min(runs, key=lambda r: r[1])
        cells = [seconds[c] for c in STAGES]
        text = "".join(f"{1e3 * v / count:>11.1f}" if v else f"{'-':>11}" for v in cells)
        main_thread = sum(seconds[c] for c in STAGES if not c.endswith("*"))
        ms[label] = 1e3 * wall / count
        print(f"{label:<9}{1e3 * decode:>9.1f}{text}{1e3 * main_thread / count:>9.1f}"
              f"{1e3 * (wall - main_thread) / count:>7.1f}{ms[label]:>12.1f}"
              f"{count / wall:>10.2f}", flush=True)
    if "flow" in ms:
        print("x flow: " + ", ".join(f"{label} {t / ms['flow']:.1f}x" for label, t in ms.items()))
    print("decode*: decode-only pass; tracking decodes in a background thread, overlapped.")
    print("encoder*, png*, overlay*: on their own threads, overlapped with the main thread's "
          "stages (sum).")
    if any(m != "model" for m in args.methods.split(",")):
        print("flow: its whole propagator step is under `copy`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
