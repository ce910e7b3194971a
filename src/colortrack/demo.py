"""`colortrack demo`: track the bundled DAVIS clip with the shipped model, next to the baselines.

Offline: the clip (DAVIS-2016 `dog`, frames 0-29, CC BY 4.0), its masks and the model all ship
inside the package.
"""

from __future__ import annotations

from pathlib import Path

from colortrack.data.outputs import output_folder
from colortrack.data.video import VideoReader
from colortrack.eval.demo_clip import demo_clip, score
from colortrack.track.tracking import Tracker, track_to_dir
from colortrack.track.visualize import write_gif

METHODS = ("model+pixels", "model", "flow", "identity")  # the default tracker first


def run_demo(out: str | Path = "colortrack-demo", *, overwrite: bool = False,
             progress: bool = True, model: str | Path | None = None) -> str:
    """Track the clip with each method into OUT/<method>/, write OUT/demo.gif; return a table.

    OUT appears whole or not at all: a failed or stopped demo leaves it as it was."""
    out = Path(out)
    video, truth = demo_clip()
    rows = [f"{'method':<12} {'J&F':>6} {'J':>6} {'F':>6} {'s/frame':>8}"]
    ours = {*METHODS, "demo.gif"}.__contains__
    with output_folder(out, overwrite=overwrite, ours=ours, what="a demo") as stage:
        for method in METHODS:
            learned = method.startswith("model")
            tracker = Tracker.from_pretrained(model if learned else None, method=method)
            summary = track_to_dir(tracker, video, truth[0], stage / method, progress=progress)
            j, f = score(stage / method, truth)
            rows.append(f"{method:<12} {(j + f) / 2:>6.1f} {j:>6.1f} {f:>6.1f} "
                        f"{summary.seconds / summary.frames:>8.3f}")
        with VideoReader(stage / METHODS[0] / "overlay.mp4", short_side=240) as overlay:
            write_gif(stage / "demo.gif", list(overlay), fps=12)
    rows.append(f"\nmasks and overlay.mp4 per method in {out}/, preview: {out / 'demo.gif'}")
    return "\n".join(rows)
