"""Build the bundled demo clip: the first 30 frames of DAVIS-2016 `dog` with their masks.

Writes src/colortrack/assets/demo/{dog.mp4, masks/00000.png..00029.png, ATTRIBUTION.md}.
Usage: python benchmarks/make_demo_asset.py [DAVIS_ROOT]  (default:
$COLORTRACK_DATA/davis2016-dev, else ./data/davis2016-dev).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from colortrack.data.annotations import read_mask, write_mask
from colortrack.data.files import atomic_write_bytes
from colortrack.data.video import VideoReader
from colortrack.data.video_writer import VideoWriter

SEQUENCE, NUM_FRAMES, FPS, CRF = "dog", 30, 24, 20
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "colortrack" / "assets" / "demo"

ATTRIBUTION = f"""# Demo clip attribution

`dog.mp4` and `masks/` are frames 0-{NUM_FRAMES - 1} of the sequence `{SEQUENCE}` of DAVIS 2016
(480p JPEG frames and ground-truth masks), re-encoded as H.264 at {FPS} fps (CRF {CRF}); the masks
are stored as palette PNGs with ids 0 = background, 1 = the dog.

DAVIS: F. Perazzi, J. Pont-Tuset, B. McWilliams, L. Van Gool, M. Gross, A. Sorkine-Hornung,
"A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation", CVPR 2016.
https://davischallenge.org/

Licensed under Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/ . Changes: cut to the first {NUM_FRAMES} frames,
re-encoded to H.264 video, masks converted from 0/255 to palette PNGs.

Rebuild with `python benchmarks/make_demo_asset.py`.
"""


def main(davis_root: Path) -> None:
    frames_dir = davis_root / "JPEGImages" / "480p" / SEQUENCE
    masks_dir = davis_root / "Annotations" / "480p" / SEQUENCE
    (OUT / "masks").mkdir(parents=True, exist_ok=True)
    with (
        VideoReader(frames_dir) as reader,
        VideoWriter(OUT / f"{SEQUENCE}.mp4", FPS, crf=CRF, preset="medium") as out,
    ):
        for index, frame in zip(range(NUM_FRAMES), reader, strict=False):
            out.write(frame)
            name = f"{index:05d}.png"
            write_mask(OUT / "masks" / name, read_mask(masks_dir / name))
    atomic_write_bytes(OUT / "ATTRIBUTION.md", ATTRIBUTION.encode("utf-8"))
    size = (OUT / f"{SEQUENCE}.mp4").stat().st_size
    print(f"wrote {OUT} ({NUM_FRAMES} frames, {size / 1e6:.2f} MB video)")


if __name__ == "__main__":
    env = os.environ.get("COLORTRACK_DATA")
    default = Path(env) if env else Path("data")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default / "davis2016-dev")
