"""Tracking speed as users see it: `colortrack track` run as a command, start-up included.

    python benchmarks/bench_cli.py            # every davis2016-dev sequence + 1,000 frames
    python benchmarks/bench_cli.py --quick    # 2 sequences, 2 rounds, no long clip
    python benchmarks/bench_cli.py --stages   # also where the model's time goes

Each DAVIS sequence is first encoded once as an H.264 MP4 at 24 frames/s with its first mask as
a palette PNG, as a user would bring them. Then, in each of `--repeat` rounds, `python -m
colortrack -q track VIDEO --mask MASK --out DIR` runs as a subprocess for every sequence and
method, the methods' order alternating between rounds so that a slow spell of the machine hits
both alike. Wall time covers everything the user waits for: interpreter start, imports, loading
the model, decoding, the encoder, the copy, palette PNGs and the overlay video. The table shows
the median over rounds and the range; `x flow` is the model's median time over flow's.

"start-up" is the same command on the sequence's first 2 frames; the 1,000-frame clip plays the
longest sequence forwards and backwards until it has 1,000 frames (the motion stays natural).

With --stages, every sequence is also tracked once in this process with the library's stage
clock (`colortrack.stages.timed`), each stage shown in ms per frame. The encoder runs on its own
thread, one frame ahead of the copy; copy, upsample and argmax on the main thread, whose "rest"
is its wall time outside them (Python glue, waiting for the next embedding); the PNG (write)
and the overlay on a writer thread. Decoding runs on a fourth thread and is not among the
stages. The two cores are shared by all of them and by the H.264 encoder's threads, so a
stage's time here includes waiting for a core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colortrack.cli import main as cli_main
from colortrack.data.annotations import write_mask
from colortrack.data.davis import DavisDataset
from colortrack.data.video_writer import VideoWriter
from colortrack.eval.metrics import VOID_ID
from colortrack.model.device import this_cpu
from colortrack.stages import timed

# The benchmark folder (docs/data.md): $COLORTRACK_DATA, else ./data.
DAVIS = Path(os.environ.get("COLORTRACK_DATA", "data")) / "davis2016-dev"
STAGES = ("encode", "copy", "upsample", "argmax", "write", "overlay")
MAIN_THREAD = ("copy", "upsample", "argmax")  # the encoder and the writes have threads of their own


def prepare(root: Path, sequence: str, work: Path, frames: int | None = None,
            long: int | None = None) -> tuple[Path, Path, int]:
    """SEQ.mp4 and SEQ.png in `work`, from the DAVIS JPEGs and first mask (void as background):
    the first `frames` frames, or `long` frames played forwards and backwards."""
    dataset = DavisDataset(root, sequences=[sequence])
    paths = dataset.frame_paths(sequence)
    if long:
        cycle = paths + paths[-2:0:-1]
        paths = [cycle[i % len(cycle)] for i in range(long)]
    paths = paths[:frames]
    name = f"{sequence}-{len(paths)}"
    video, mask = work / f"{name}.mp4", work / f"{name}.png"
    if not video.exists():
        with VideoWriter(video, 24.0) as writer:
            for path in paths:
                with Image.open(path) as image:
                    writer.write(np.asarray(image.convert("RGB")))
        ids = dataset.first_mask(sequence)
        ids[ids == VOID_ID] = 0
        write_mask(mask, ids)
    return video, mask, len(paths)


def track_seconds(video: Path, mask: Path, method: str, out: Path) -> float:
    """Wall seconds of `colortrack track` as a new process."""
    command = [sys.executable, "-m", "colortrack", "-q", "track", str(video), "--mask", str(mask),
               "--out", str(out), "--method", method, "--overwrite"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def stage_ms(video: Path, mask: Path, out: Path, frames: int) -> dict[str, float]:
    """ms per frame of each labelled stage, the model tracking in-process, and of the rest of
    the main thread's wall time (outside its own stages)."""
    started = time.perf_counter()
    with timed() as totals, contextlib.redirect_stdout(io.StringIO()):
        cli_main(["-q", "track", str(video), "--mask", str(mask), "--out", str(out),
                  "--overwrite"])
    wall = time.perf_counter() - started
    ms = {s: 1e3 * totals.get(s, 0.0) / frames for s in STAGES}
    ms["rest"] = 1e3 * wall / frames - sum(ms[s] for s in MAIN_THREAD)
    return ms


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS root")
    parser.add_argument("--sequences", help="comma-separated (default: all in the root)")
    parser.add_argument("--methods", default="model,flow", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--long", type=int, default=1000, help="frames of the long clip; 0 = none")
    parser.add_argument("--stages", action="store_true", help="also the model's stage split")
    parser.add_argument("--quick", action="store_true", help="2 sequences, 2 rounds, no long clip")
    parser.add_argument("--work", type=Path, help="keep the encoded inputs here (default: temp)")
    args = parser.parse_args(argv)
    names = (args.sequences.split(",") if args.sequences
             else DavisDataset(args.davis).sequences)
    repeat, long = args.repeat, args.long
    if args.quick:
        names, repeat, long = names[:2], 2, 0
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [(name, *prepare(args.davis, name, work)) for name in names]
        startup = [(f"start-up ({names[0]}, 2 frames)", *prepare(args.davis, names[0], work, 2))]
        longest = max(cases, key=lambda c: c[3])[0]
        extra = [(f"{longest} x{long} frames", *prepare(args.davis, longest, work, long=long))
                 if long else None]
        rows = startup + cases + [e for e in extra if e]
        seconds: dict[tuple[str, str], list[float]] = {}
        for round_ in range(repeat):  # every row and method once per round
            order = methods if round_ % 2 == 0 else methods[::-1]
            for label, video, mask, _ in rows:
                for method in order:
                    seconds.setdefault((label, method), []).append(
                        track_seconds(video, mask, method, work / "out" / video.stem))
        print(f"`colortrack track` as a command, 480p MP4 in, masks + overlay out; "
              f"{os.cpu_count()} cores of {this_cpu()}, {torch.get_num_threads()} torch "
              f"threads; median "
              f"of {repeat} rounds (range)")
        head = f"{'sequence':<28}{'frames':>7}"
        head += "".join(f"{m + ' s':>18}{m + ' fr/s':>11}" for m in methods)
        print(head + (f"{'x flow':>8}" if "flow" in methods and "model" in methods else ""))
        for label, _, _, frames in rows:
            line = f"{label:<28}{frames:>7}"
            for method in methods:
                runs = seconds[(label, method)]
                med = statistics.median(runs)
                line += f"{med:>8.2f} ({spread(runs):>8}){frames / med:>11.1f}"
            if "flow" in methods and "model" in methods:
                ratio = (statistics.median(seconds[(label, "model")])
                         / statistics.median(seconds[(label, "flow")]))
                line += f"{ratio:>7.2f}x"
            print(line, flush=True)
        if "model" in methods:
            rates = [frames / statistics.median(seconds[(label, "model")])
                     for label, _, _, frames in cases]
            print(f"model on the {len(cases)} sequences: {min(rates):.1f}-{max(rates):.1f} "
                  f"frames/s, start-up included")
        if args.stages:
            print("\nmodel, ms per frame by stage (in-process; threads: encode | copy, upsample, "
                  "argmax, rest | write, overlay; decode overlapped):")
            print(f"{'sequence':<28}" + "".join(f"{s:>10}" for s in (*STAGES, "rest")))
            for label, video, mask, frames in cases:
                ms = stage_ms(video, mask, work / "out" / video.stem, frames)
                print(f"{label:<28}" + "".join(f"{v:>10.1f}" for v in ms.values()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
