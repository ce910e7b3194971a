"""Numbers out of range and settings that would need more memory than the machine has are a
one-line usage error naming the limit, raised before anything is allocated or written; so are
tiny inputs, undecodable list files and looping folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import cli, color_patches, one_line, write_video

H, W = 48, 64


@pytest.mark.parametrize(("setting", "limit"), [
    ("topk=1000000000", "topk=1000000000 (limit 1..65536)"),
    ("context=1000000", "context=1000000 (limit 0..1000)"),
    ("radius=1e300", "radius=1e+300 (limit 0..1024)"),
    ("temperature=1e-300", "temperature=1e-300 (limit 0.0001..10000)"),
])
def test_propagation_settings_out_of_range(capsys, clip, tmp_path, setting, limit) -> None:
    code, err = cli(capsys, "track", clip[0], "--mask", clip[1], "--out", tmp_path / "o",
                    "--set", setting)
    assert code == 2
    one_line(err, "bad propagation setting", limit)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("option", "limit"), [
    (["--set", "size=100000"], "size=100000 (limit 8..4096)"),
    (["--set", "refs=100000"], "refs=100000 (limit 1..64)"),
    (["--set", "fps=1e-300"], "fps=1e-300 (limit 0.01..1000)"),
    (["--batch", "100000000"], "batch=100000000 (limit 1..65536)"),
])
def test_training_settings_out_of_range(capsys, clip, tmp_path, option, limit) -> None:
    code, err = cli(capsys, "train", clip[0], "--out", tmp_path / "run", *option)
    assert code == 2
    one_line(err, "bad training setting", limit)
    assert not (tmp_path / "run").exists()


def test_tracking_that_needs_more_memory_than_there_is(capsys, clip, tmp_path) -> None:
    code, err = cli(capsys, "track", clip[0], "--mask", clip[1], "--out", tmp_path / "o",
                    "--set", "context=1000", "--set", "radius=1024")  # 1.3 TB of buffers
    assert code == 2
    one_line(err, "tracking with 1000 context frames and radius 1024", "needs at least",
             "GiB is available", "lower --set context or radius")
    assert not (tmp_path / "o").exists()


def test_training_that_needs_more_memory_than_there_is(capsys, tmp_path) -> None:
    video = write_video(tmp_path / "v.mp4", color_patches(0, (3, 1), frames=24), 12)
    code, err = cli(capsys, "train", video, "--out", tmp_path / "run", "--batch", "65536",
                    "--set", "size=4096")
    assert code == 2
    one_line(err, "training with batch 65536 of 4 frames at 4096x4096 needs at least",
             "lower --batch")
    assert not (tmp_path / "run").exists()


def _points(tmp_path: Path, x: float, frame: int) -> Path:
    doc = {"format": "colortrack-keypoints/1", "names": ["a"],
           "frames": [{"frame": frame, "points": [[x, 5, 1]]}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    return tmp_path / "p.json"


@pytest.mark.parametrize(("x", "frame", "message"), [
    (1e308, 0, "points[0] lies beyond 1e+06 pixels"),
    (-1e7, 0, "points[0] lies beyond 1e+06 pixels"),
    (5, 10**30, "frame must be a frame index 0..1000000000"),
    (5, 2**63, "frame must be a frame index 0..1000000000"),
])
def test_keypoint_numbers_out_of_range(capsys, clip, tmp_path, x, frame, message) -> None:
    points = _points(tmp_path, x, frame)
    code, err = cli(capsys, "track", clip[0], "--points", points, "--out", tmp_path / "o",
                    "--method", "identity")
    assert code == 1
    one_line(err, f"{points}: frames[0].", message)  # and no overflow warning line


@pytest.mark.parametrize("size", [(1, 1), (7, 5)])
def test_embed_of_a_tiny_video(capsys, tmp_path, size) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / "0.png")
    code, err = cli(capsys, "embed", folder, "--out", tmp_path / "e.mp4")
    assert code == 1
    one_line(err, f"{folder}: too small to embed")
    assert not (tmp_path / "e.mp4").exists()


def test_undecodable_list_files(capsys, tmp_path) -> None:
    root = tmp_path / "davis"
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_bytes(b"bear\n\xff\xfe\n")
    (root / "JPEGImages/480p").mkdir(parents=True)
    (root / "Annotations/480p").mkdir(parents=True)
    code, err = cli(capsys, "eval", "davis", "--root", root, "--predictions", tmp_path)
    assert code == 1
    one_line(err, "val.txt: cannot read the sequence list")
    (tmp_path / "split.txt").write_bytes(b"\xff\xfe/a/b\n")
    (tmp_path / "jhmdb").mkdir()
    code, err = cli(capsys, "bench", "jhmdb", "--root", tmp_path / "jhmdb", "--split",
                    tmp_path / "split.txt", "--out", tmp_path / "o", "--json", tmp_path / "j.json")
    assert code == 1
    one_line(err, "split.txt: cannot read the clip list")


def test_a_folder_linking_to_itself_is_walked_once(capsys, tmp_path) -> None:
    root = tmp_path / "jhmdb"
    root.mkdir()
    (root / "again").symlink_to(root)
    code, err = cli(capsys, "bench", "jhmdb", "--root", root, "--out", tmp_path / "o",
                    "--json", tmp_path / "j.json")
    assert code == 1
    one_line(err, "no JHMDB clip")
