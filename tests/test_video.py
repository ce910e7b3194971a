"""Video I/O: round trips through the H.264 writer, resampling, folders, seeking, bad files."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import colortrack
from colortrack.data.annotations import read_mask
from colortrack.data.video import VideoReader, list_videos, probe, read_clip
from colortrack.data.video_writer import VideoWriter
from colortrack.errors import ColortrackError, UsageError


def index_frames(num_frames: int, size: int = 32) -> list[np.ndarray]:
    """Flat gray frames whose level encodes their index, so a read frame can be identified."""
    return [np.full((size, size, 3), 8 * i + 4, dtype=np.uint8) for i in range(num_frames)]


def frame_index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 4) / 8)


def test_round_trip_keeps_size_count_and_pixels(moving_video):
    path, frames = moving_video
    info = probe(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 10.0, 12)
    with VideoReader(path) as reader:
        decoded = list(reader)
    assert len(decoded) == 12
    luma = np.array([0.299, 0.587, 0.114])  # chroma is subsampled (yuv420p), luma is not
    for got, want in zip(decoded, frames, strict=True):
        assert got.shape == (48, 64, 3) and got.dtype == np.uint8
        assert np.abs(got @ luma - want @ luma).mean() < 3
        assert np.abs(got.astype(int) - want).mean() < 15


def test_colors_survive_encoding(make_video):
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    frame[:, :16] = (220, 30, 30)
    frame[:, 16:32] = (30, 200, 40)
    frame[:, 32:] = (20, 40, 210)
    decoded = next(iter(VideoReader(make_video([frame] * 3))))
    for column, color in ((8, (220, 30, 30)), (24, (30, 200, 40)), (40, (20, 40, 210))):
        assert np.abs(decoded[16, column].astype(int) - color).max() <= 12


def test_reader_iterates_again_from_the_start(make_video):
    reader = VideoReader(make_video(index_frames(5)))
    assert [frame_index(f) for f in reader] == [0, 1, 2, 3, 4]
    assert [frame_index(f) for f in itertools.islice(reader, 2)] == [0, 1]
    assert [frame_index(f) for f in reader] == [0, 1, 2, 3, 4]
    reader.close()


def test_odd_size_is_padded_to_even(make_video):
    frame = np.full((21, 33, 3), 128, dtype=np.uint8)
    info = probe(make_video([frame, frame]))
    assert (info.width, info.height) == (34, 22)


@pytest.mark.parametrize(
    ("fps", "expected_fps", "indices"),
    [
        (10, 10.0, list(range(0, 30, 3))),
        (24, 24.0, [math.ceil(k * 30 / 24 - 0.5) for k in range(24)]),  # ties: earlier
        (7, 7.0, [math.ceil(k * 30 / 7 - 0.5) for k in range(7)]),
        (60, 30.0, list(range(30))),  # no upsampling: the source rate is kept
    ],
)
def test_fps_resampling_keeps_nearest_frames(make_video, fps, expected_fps, indices):
    path = make_video(index_frames(30), fps=30)
    with VideoReader(path, fps=fps) as reader:
        assert reader.info.fps == expected_fps
        assert reader.info.num_frames == len(indices)
        assert [frame_index(f) for f in reader] == indices


def test_resizing(moving_video):
    path, _ = moving_video
    with VideoReader(path, short_side=24) as reader:
        assert (reader.info.width, reader.info.height) == (32, 24)
        assert next(iter(reader)).shape == (24, 32, 3)
    with VideoReader(path, size=(20, 10)) as reader:
        assert next(iter(reader)).shape == (10, 20, 3)
    with pytest.raises(UsageError):
        VideoReader(path, size=(20, 10), short_side=5)
    with pytest.raises(UsageError):
        VideoReader(path, fps=0)


def _save(path: Path, frame: np.ndarray) -> None:
    Image.fromarray(frame).save(path)


def test_folder_of_frames_in_natural_order(tmp_path):
    frames = index_frames(12, size=16)
    for i, frame in enumerate(frames):
        _save(tmp_path / f"{i}.png", frame)  # 0.png 1.png ... 10.png 11.png
    (tmp_path / "notes.txt").write_text("ignored")
    with VideoReader(tmp_path, fps=25, short_side=8) as reader:
        assert reader.info.num_frames == 12 and reader.info.fps == 25
        assert (reader.info.width, reader.info.height) == (8, 8)
        assert [frame_index(f) for f in reader] == list(range(12))
    assert probe(tmp_path).fps is None


def test_folder_with_mismatched_sizes_names_the_odd_file(tmp_path):
    _save(tmp_path / "00000.jpg", np.zeros((16, 16, 3), np.uint8))
    _save(tmp_path / "00001.jpg", np.zeros((16, 16, 3), np.uint8))
    _save(tmp_path / "00002.jpg", np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ColortrackError, match="00002.jpg.*differs"):
        list(VideoReader(tmp_path))


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(ColortrackError, match="no .jpg/.png frames"):
        VideoReader(tmp_path)
    with pytest.raises(ColortrackError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ColortrackError, match="broken.png"):
        VideoReader(tmp_path)


def test_read_clip_seeks_to_the_nearest_frames(make_video):
    path = make_video(index_frames(30), fps=30)
    clip = read_clip(path, start=0.5, count=4, step=0.1)
    assert [frame_index(f) for f in clip] == [15, 18, 21, 24]
    assert [frame_index(f) for f in read_clip(path, 0.95, 2, 1 / 30)] == [28, 29]
    assert read_clip(path, 0, 1, 1, short_side=16)[0].shape == (16, 16, 3)
    with pytest.raises(ColortrackError, match="past the end"):
        read_clip(path, start=0.8, count=5, step=0.1)
    with pytest.raises(UsageError):
        read_clip(path, start=0, count=2, step=0)


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for _ in range(4):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.mp4", b""),
        ("text.mp4", b"this is not a video\n" * 50),
        ("random.mp4", np.random.default_rng(1).bytes(4096)),
        ("random.avi", np.random.default_rng(2).bytes(20000)),
    ],
)
def test_garbage_files_raise_colortrack_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ColortrackError, match=name):
        VideoReader(path)
    with pytest.raises(ColortrackError, match=name):
        read_clip(path, 0, 2, 0.1)


def test_audio_only_file_has_no_video_stream(tmp_path):
    with pytest.raises(ColortrackError, match="no video stream"):
        VideoReader(_audio_only(tmp_path / "sound.m4a"))


def _noise_video(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(24)]
    with VideoWriter(tmp_path / "noise.mp4", 24) as writer:
        for frame in frames:
            writer.write(frame)
    return tmp_path / "noise.mp4"


def test_truncated_and_damaged_files(tmp_path):
    data = _noise_video(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    try:  # FFmpeg conceals a cut-off end: fewer frames, or a ColortrackError, never a crash
        assert 0 < sum(1 for _ in VideoReader(truncated)) < 24
    except ColortrackError as error:
        assert "truncated.mp4" in str(error)
    damaged = bytearray(data)
    start = len(data) // 3
    damaged[start : start + 20000] = np.random.default_rng(0).bytes(20000)
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    with pytest.raises(ColortrackError, match=r"damaged.mp4: decode error at frame \d+"):
        list(VideoReader(tmp_path / "damaged.mp4"))


def test_writer_is_atomic(tmp_path):
    frame = np.zeros((16, 16, 3), dtype=np.uint8)
    writer = VideoWriter(tmp_path / "a.mp4", 10)
    writer.write(frame)
    assert not (tmp_path / "a.mp4").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "b.mp4", 10) as writer:
        writer.write(frame)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ColortrackError, match="no frames"):
        VideoWriter(tmp_path / "c.mp4", 10).close()
    with pytest.raises(ValueError), VideoWriter(tmp_path / "d.mp4", 10) as writer:
        writer.write(frame)
        writer.write(np.zeros((8, 8, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(tmp_path / "e.mp4", 10) as writer:
        writer.write(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["e.mp4"]


def test_list_videos(tmp_path):
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    for relative in ["a/clip2.mp4", "a/clip10.MP4", "b/c/x.avi", ".hidden/y.mp4", "a/.tmp.mp4"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    for relative in ["frames/seq1/00000.jpg", "frames/seq2/00000.png", "b/cover.jpg"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        _save(tmp_path / relative, frame)
    found = [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)]
    assert found == ["a/clip2.mp4", "a/clip10.MP4", "b/c/x.avi", "frames/seq1", "frames/seq2"]
    assert list_videos(tmp_path / "frames/seq1") == [tmp_path / "frames/seq1"]
    with pytest.raises(ColortrackError):
        list_videos(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "width", "height"),
    [
        ("davis-bear.mp4", 854, 480),
        ("kivy_city-cityCC0.mpg", 720, 405),
        ("opencv-vtest.avi", 768, 576),
        ("pysot_bag-bag.avi", 480, 360),
    ],
)
def test_real_videos_decode(data_dir, name, width, height):
    path = data_dir / "train-videos" / name
    with VideoReader(path, short_side=120) as reader:
        info = probe(path)
        assert (info.width, info.height) == (width, height)
        assert info.fps and info.num_frames and info.num_frames > 10
        frames = list(itertools.islice(reader, 3))
    assert len(frames) == 3 and frames[0].shape[0] == 120 and frames[0].std() > 5
    clip = read_clip(path, 1.0, 3, 0.2, short_side=120)
    assert len(clip) == 3 and clip[0].shape == frames[0].shape


def test_bundled_demo_clip():
    demo = Path(colortrack.__file__).parent / "assets" / "demo"
    info = probe(demo / "dog.mp4")
    assert (info.width, info.height, info.fps, info.num_frames) == (854, 480, 24.0, 30)
    assert (demo / "dog.mp4").stat().st_size < 2_000_000
    masks = sorted((demo / "masks").glob("*.png"))
    assert [m.name for m in masks] == [f"{i:05d}.png" for i in range(30)]
    assert set(np.unique(read_mask(masks[0])).tolist()) == {0, 1}
    assert "CC BY 4.0" in (demo / "ATTRIBUTION.md").read_text()


def test_prefetch_yields_everything_in_order_and_reraises_errors():
    import threading

    from colortrack.data.video import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ColortrackError("frame 2 is corrupt")

    stream = prefetch(broken())
    assert next(stream) == 1
    with pytest.raises(ColortrackError, match="corrupt"):
        next(stream)
    endless = prefetch(iter(int, 1), depth=2)  # an iterator that never ends
    assert next(endless) == 0
    endless.close()  # the consumer stops: the decoding thread must stop too
    assert not any(t.name == "colortrack-decode" for t in threading.enumerate())
