"""The app's cost of a correction: the first propagation of a clip against its re-propagation
after one corrected frame (only the frames between the neighbouring masks are tracked again,
on the embeddings kept from the first run).

    python benchmarks/bench_corrections.py                      # DAVIS parkour, 100 frames
    python benchmarks/bench_corrections.py --sequence dog --at 10,30,50

Runs the app's own `Session` (no server, no browser) with the default method on a DAVIS
sequence at 480p ($COLORTRACK_DATA/davis2016-dev), each correction the sequence's true mask of
that frame, each in a fresh session. Prints the seconds of both propagations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from colortrack.app.paths import Roots
from colortrack.app.session import Session
from colortrack.config import DEFAULT_METHOD
from colortrack.data.davis import DavisDataset
from colortrack.data.video import read_image
from colortrack.data.video_writer import VideoWriter
from colortrack.model.device import this_cpu
from colortrack.track.tracking import make_propagator


def wait(session: Session) -> float:
    """Seconds until the session's propagation (started just before) ends."""
    started = time.perf_counter()
    while session.activity is not None or session.progress.running:
        time.sleep(0.02)
    if session.progress.error:
        raise RuntimeError(session.progress.error)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default="parkour", help="DAVIS sequence (default: parkour)")
    parser.add_argument("--frames", type=int, default=100, help="its first N frames (default 100)")
    parser.add_argument("--at", default="50", help="frames to correct, one run each (default 50)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="propagator (default: the "
                        "default method)")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("COLORTRACK_DATA", "")) / "davis2016-dev"
    dataset = DavisDataset(data, sequences=[args.sequence])
    frames = [read_image(p) for p in dataset.frame_paths(args.sequence)[:args.frames]]
    truth = dataset.masks(args.sequence)[:len(frames)]
    truth[truth == 255] = 0
    print(f"the app's Session, {args.method}, DAVIS {args.sequence}: {len(frames)} frames at "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}; {this_cpu()}")
    print(f"{'corrected frame':>16}{'first (s)':>11}{'correction (s)':>16}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        with VideoWriter(clip, 24, crf=10) as writer:
            for frame in frames:
                writer.write(frame)
        for at in (int(v) for v in args.at.split(",")):
            roots = Roots(folder)
            session = Session(make_propagator(args.method), roots)
            session.open("clip.mp4")
            session.set_mask(0, truth[0])
            session.propagate("masks")
            first = wait(session)
            session.set_mask(at, truth[at])
            session.propagate("masks")
            again = wait(session)
            roots.close()
            print(f"{at:>16}{first:>11.2f}{again:>16.2f}{again / first:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
