"""Inputs are only ever read: every output is checked against every input (links and `..`
followed) before any work, and odd file names are files, named on one line in errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colortrack.data.annotations import write_mask
from colortrack.data.outputs import MANIFEST
from tests.conftest import cli, moving_texture, one_line, write_video

H, W = 48, 64


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    root = tmp_path / "davis"
    images, annotations = root / "JPEGImages/480p/seqa", root / "Annotations/480p/seqa"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t, frame in enumerate(moving_texture(3, W, H)):
        Image.fromarray(frame).save(images / f"{t:05d}.jpg")
        ids = np.zeros((H, W), np.uint8)
        ids[10:30, 10:30] = 255
        Image.fromarray(ids).save(annotations / f"{t:05d}.png")
    return root


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, Path]:
    """The small clip and mask in a folder of their own, IN, that outputs must stay out of."""
    folder = tmp_path / "in"
    folder.mkdir()
    ids = np.zeros((H, W), dtype=np.uint8)
    ids[10:30, 20:40] = 1
    write_mask(folder / "first.png", ids)
    return write_video(folder / "clip.mp4", moving_texture(6, W, H), 10), folder / "first.png"


def test_a_json_or_output_folder_inside_the_dataset_is_refused(capsys, davis, tmp_path) -> None:
    before = tree(davis)
    mask = davis / "Annotations/480p/seqa/00000.png"
    cases = [
        (["--out", tmp_path / "o", "--json", mask, "--overwrite"], f"{mask}: lies inside"),
        (["--out", tmp_path / "o", "--json", davis / "scores.json"], "lies inside the input"),
        (["--out", davis / "Annotations/480p"], "lies inside the input"),
        (["--out", davis / ".." / "davis"], "is an input of this command"),
        (["--out", tmp_path], "is an input, inside the output folder"),
    ]
    for options, message in cases:
        code, err = cli(capsys, "bench", "davis", "--root", davis, "--method", "identity",
                        *options)
        assert code == 1, options
        one_line(err, message)
    assert tree(davis) == before and not (tmp_path / "o").exists()


def test_outputs_reached_through_links_are_refused(capsys, clip, tmp_path) -> None:
    video, mask = clip
    before = tree(video.parent)
    (tmp_path / "link").symlink_to(video.parent)
    (tmp_path / "mask-link.png").symlink_to(mask)
    (tmp_path / "video-link.mp4").symlink_to(video)
    cases = [
        (["track", video, "--mask", mask, "--out", tmp_path / "link", "--method", "identity"],
         "is an input, inside the output folder"),
        (["embed", video, "--out", tmp_path / "video-link.mp4", "--overwrite"], "is an input"),
        (["colorize", video, "--reference", tmp_path / "mask-link.png", "--out", mask,
          "--overwrite"], "is an input"),
    ]
    for argv, message in cases:
        code, err = cli(capsys, *argv)
        assert code == 1, argv
        one_line(err, message)
    assert tree(video.parent) == before


def test_a_symbolic_link_loop_is_one_line(capsys, clip, tmp_path) -> None:
    video, mask = clip
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for argv in (["track", tmp_path / "loop", "--mask", mask, "--out", tmp_path / "o"],
                 ["track", video, "--mask", mask, "--out", tmp_path / "loop" / "o"],
                 ["train", tmp_path / "loop", "--out", tmp_path / "run"]):
        code, err = cli(capsys, *argv)
        assert code == 1, argv
        one_line(err, "loop")


@pytest.mark.parametrize("name", ["pipe:1.mp4", "concat:x.mp4", "a\nb.mp4", "%d-|é.mp4",
                                  os.fsdecode(b"\xff\xfe.mp4")])
def test_odd_file_names_are_files(capsys, clip, tmp_path, monkeypatch, name) -> None:
    """Relative names that look like FFmpeg protocols, control characters, undecodable bytes."""
    video, mask = clip
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(video.read_bytes())
    code, err = cli(capsys, "track", name, "--mask", mask, "--out", name + ".out",
                    "--method", "identity")
    assert code == 0, err
    assert len(list(Path(name + ".out").glob("*.png"))) == 6
    code, err = cli(capsys, "track", "no-" + name, "--mask", mask, "--out", "o")
    assert code == 1
    one_line(err, "no such file")


def test_bench_json_beside_the_predictions_is_kept_on_overwrite(capsys, davis, tmp_path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "davis", "--root", davis, "--method", "identity", "--out", out,
            "--json", out / "scores.json"]
    assert cli(capsys, *argv)[0] == 0
    assert cli(capsys, *argv, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "scores.json", "seqa"]
    assert json.loads((out / "scores.json").read_text())["method"] == "identity"
