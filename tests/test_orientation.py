"""Frames and masks are read as they are displayed: a video's display rotation (as phones
record) and a JPEG's EXIF orientation are honoured, so a mask drawn on the upright frame fits;
lossy mask files, whose noise would read as objects, are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from colortrack.cli import main
from colortrack.data.annotations import read_mask, write_mask
from colortrack.data.video import VideoReader, read_clip, read_image
from tests.conftest import moving_texture

H, W = 48, 64


def rotated_video(path: Path, frames: list[np.ndarray], degrees: int) -> Path:
    """An MP4 whose display matrix turns the stored frames `degrees` counter-clockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_a_rotated_video_is_read_upright(tmp_path, degrees) -> None:
    frames = moving_texture(4, W, H)
    video = rotated_video(tmp_path / "phone.mp4", frames, degrees)
    turns = degrees // 90 % 4
    with VideoReader(video) as reader:
        decoded = list(reader)
        assert (reader.info.width, reader.info.height) == ((H, W) if turns % 2 else (W, H))
    for got, source in zip(decoded, frames, strict=True):
        assert np.abs(got.astype(int) - np.rot90(source, turns)).mean() < 3
    clip = read_clip(video, 0.0, 2, 0.1)
    assert np.abs(clip[1].astype(int) - np.rot90(frames[1], turns)).mean() < 3


def test_a_mask_drawn_on_the_upright_frame_tracks_a_rotated_video(capsys, tmp_path) -> None:
    video = rotated_video(tmp_path / "phone.mp4", moving_texture(4, W, H), 90)
    ids = np.zeros((W, H), np.uint8)  # upright: 48 wide, 64 high
    ids[5:25, 10:30] = 1
    write_mask(tmp_path / "m.png", ids)
    code = main(["-q", "track", str(video), "--mask", str(tmp_path / "m.png"),
                 "--out", str(tmp_path / "o"), "--method", "identity"])
    assert code == 0, capsys.readouterr().err
    assert read_mask(tmp_path / "o" / "00003.png").shape == (W, H)
    with VideoReader(tmp_path / "o" / "overlay.mp4") as overlay:
        assert (overlay.info.width, overlay.info.height) == (H, W)  # written as displayed


def test_jpeg_frames_are_turned_by_their_exif_orientation(tmp_path) -> None:
    """Orientation 6: the camera was turned; viewers turn the picture 90 degrees clockwise."""
    frame = moving_texture(1, W, H)[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(frame).save(tmp_path / "0.jpg", quality=100, exif=exif)
    got = read_image(tmp_path / "0.jpg")
    assert got.shape == (W, H, 3)
    assert np.abs(got.astype(int) - np.rot90(frame, -1)).mean() < 4


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_a_lossy_mask_is_refused_with_how_to_save_one(capsys, tmp_path, kind) -> None:
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 20:40] = 255
    mask = tmp_path / f"mask.{kind.lower()}"
    Image.fromarray(ids).save(mask, format=kind, quality=90)
    before = hashlib.sha256(mask.read_bytes()).hexdigest()
    video = rotated_video(tmp_path / "v.mp4", moving_texture(2, W, H), 0)
    code = main(["-q", "track", str(video), "--mask", str(mask), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{mask}: a {kind} mask holds compression noise" in err and "save masks as PNG" in err
    assert hashlib.sha256(mask.read_bytes()).hexdigest() == before
    assert not (tmp_path / "o").exists()
