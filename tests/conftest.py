"""Shared fixtures: the real-data folder (or a skip) and tiny synthetic videos."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from colortrack.data.video_writer import VideoWriter


def data_root() -> Path:
    """Where the real data is expected; it may be absent."""
    return Path(os.environ.get("COLORTRACK_DATA", "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data folder ($COLORTRACK_DATA, else ./data; docs/data.md); skips when absent."""
    path = data_root()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set COLORTRACK_DATA)")
    return path


def moving_texture(
    num_frames: int = 12, width: int = 64, height: int = 48, speed: tuple[int, int] = (2, 1)
) -> list[np.ndarray]:
    """Frames of a smooth random color texture translating by `speed` (dx, dy) pixels a frame.

    Smooth (blurred, upsampled noise) so H.264 keeps it nearly exact, textured so trackers and
    colorizers have something to follow.
    """
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    size = (coarse.shape[1] * 6, coarse.shape[0] * 6)
    texture = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
    big = np.tile(texture, (2, 2, 1))
    return [
        np.ascontiguousarray(np.roll(big, (t * speed[1], t * speed[0]), (0, 1))[:height, :width])
        for t in range(num_frames)
    ]


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    with VideoWriter(path, fps, crf=10) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_video(frames, fps=10, name="clip.mp4") writes frames as an MP4 in tmp_path."""

    def make(frames: list[np.ndarray], fps: float = 10, name: str = "clip.mp4") -> Path:
        return write_video(tmp_path / name, frames, fps)

    return make


@pytest.fixture
def moving_video(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """A 12-frame 64x48 10 fps MP4 of a moving texture, with the frames that went in."""
    frames = moving_texture()
    return write_video(tmp_path / "moving.mp4", frames, 10), frames


def color_patches(seed: int, speed: tuple[int, int], frames: int = 40, size: int = 96,
                  patch: int = 24) -> list[np.ndarray]:
    """A mosaic of square patches of random color and brightness, sliding by `speed` a frame."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, 256, (2 * size // patch, 2 * size // patch, 3), dtype=np.uint8)
    mosaic = np.kron(tiles, np.ones((patch, patch, 1), dtype=np.uint8))
    shifted = (np.roll(mosaic, (t * speed[1], t * speed[0]), (0, 1)) for t in range(frames))
    return [np.ascontiguousarray(m[:size, :size]) for m in shifted]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two 40-frame 96x96 MP4s of sliding color patches, to train on."""
    folder = tmp_path_factory.mktemp("videos")
    for i, speed in enumerate([(3, 1), (-1, 3)]):
        write_video(folder / f"texture{i}.mp4", color_patches(i, speed), 12)
    return folder


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """Run the command line in-process; return its exit code and stderr."""
    from colortrack.cli import main

    code = main(["-q", *map(str, argv)])
    return code, capsys.readouterr().err


def one_line(err: str, *fragments: str) -> None:
    """Exactly one line, `colortrack: error: ...`, holding every fragment, and no traceback."""
    assert err.startswith("colortrack: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, Path]:
    """A 6-frame 64x48 video and a one-object palette mask for its first frame."""
    from colortrack.data.annotations import write_mask

    ids = np.zeros((48, 64), dtype=np.uint8)
    ids[10:30, 20:40] = 1
    write_mask(tmp_path / "first.png", ids)
    return write_video(tmp_path / "clip.mp4", moving_texture(6, 64, 48), 10), tmp_path / "first.png"


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (made if absent) as a tmpfs of `size` (e.g. "12m") for the block; the test is
    skipped where the machine does not allow mounting (root with CAP_SYS_ADMIN)."""
    folder.mkdir(exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def recorded(out: Path, *names: str) -> None:
    """Record `names` in `out`'s manifest, as the earlier run that wrote them would have."""
    from colortrack.data.outputs import MANIFEST

    listed = (out / MANIFEST).read_text().split() if (out / MANIFEST).exists() else []
    (out / MANIFEST).write_text("".join(f"{n}\n" for n in sorted({*listed, *names})))
