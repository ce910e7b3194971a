"""`colortrack bench jhmdb`: clip discovery in JHMDB layouts, split lists, PCK and its outputs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from colortrack.cli import main
from colortrack.data.jhmdb import JHMDB_JOINTS, read_split
from colortrack.data.keypoints import read_track_json
from colortrack.errors import ColortrackError
from tests.conftest import moving_texture

T, SPEED = 6, (2, 1)
PCK_KEYS = [f"PCK@{alpha}" for alpha in (0.1, 0.2, 0.3, 0.4, 0.5)]
# 15 joints spread over 10..44 x 8..32 of the 64x48 frames, so that they stay inside while moving.
GRID = np.meshgrid(np.linspace(10, 44, 5), np.linspace(8, 32, 3))
JOINTS0 = np.stack(GRID, axis=-1).reshape(15, 2)


def write_clip(root: Path, action: str, clip: str, speed: tuple[int, int]) -> None:
    """A clip in the official layout: Rename_Images/<action>/<clip>/ + joint_positions/..."""
    frames_dir = root / "Rename_Images" / action / clip
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(moving_texture(T, speed=speed)):
        Image.fromarray(frame).save(frames_dir / f"{t + 1:05d}.png")
    xy = np.stack([JOINTS0 + np.multiply(t, speed) for t in range(T)])  # (T, 15, 2), 0-based
    mat_dir = root / "joint_positions" / action / clip
    mat_dir.mkdir(parents=True)
    scipy.io.savemat(mat_dir / "joint_positions.mat", {"pos_img": (xy + 1).transpose(2, 1, 0)})


@pytest.fixture()
def jhmdb(tmp_path: Path) -> Path:
    """A tiny JHMDB: a static clip, a moving clip, and an annotation whose frames are missing."""
    root = tmp_path / "JHMDB"
    write_clip(root, "stand", "still_clip", (0, 0))
    write_clip(root, "walk", "moving_clip", SPEED)
    lost = root / "joint_positions" / "walk" / "lost_clip"
    lost.mkdir(parents=True)
    shutil.copy(root / "joint_positions" / "walk" / "moving_clip" / "joint_positions.mat", lost)
    for kind, name in (("Rename_Images", "00001.png"), ("joint_positions", "joint_positions.mat")):
        hidden = root / kind / "walk" / ".AppleDouble"  # macOS debris, as in the JHMDB archive
        hidden.mkdir()
        (hidden / name).write_bytes(b"resource fork, not data")
    return root


def bench(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["-q", "bench", "jhmdb", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("method", ["identity", "flow"])
def test_bench_jhmdb_scores_and_writes_tracks(
    capsys, caplog, jhmdb: Path, tmp_path: Path, method: str
) -> None:
    report = tmp_path / "pck.json"
    with caplog.at_level(logging.WARNING):
        code, stdout, _ = bench(
            capsys, "--root", jhmdb, "--out", tmp_path / "out", "--method", method,
            "--json", report,
        )  # fmt: skip
    assert code == 0 and "moving_clip" in stdout and "still_clip" in stdout
    assert "lost_clip" in caplog.text and "skipped" in caplog.text
    scores = json.loads(report.read_text())
    assert set(scores) == {*PCK_KEYS, "clips", "method", "seconds", "frames"}
    assert scores["method"] == method and set(scores["clips"]) == {"still_clip", "moving_clip"}
    assert scores["frames"] == {"still_clip": T, "moving_clip": T}
    assert all(set(clip) == set(PCK_KEYS) for clip in scores["clips"].values())
    still, moving = scores["clips"]["still_clip"], scores["clips"]["moving_clip"]
    # Pooled over the same number of frames per clip and joint, the overall is the clips' mean.
    assert scores["PCK@0.1"] == pytest.approx((still["PCK@0.1"] + moving["PCK@0.1"]) / 2)
    assert still == pytest.approx(dict.fromkeys(PCK_KEYS, 100.0))
    if method == "identity":
        # Reference 0.6 x diag(34, 24) = 24.97 px: only frame 1 (moved sqrt(5) px) is within 0.1.
        assert moving["PCK@0.1"] == pytest.approx(20.0)
    else:
        assert moving["PCK@0.1"] >= 90.0
    names, skeleton, frames = read_track_json(tmp_path / "out" / "moving_clip" / "points.json")
    assert names == JHMDB_JOINTS and len(skeleton) == 14
    assert [index for index, _, _ in frames] == list(range(T))


def test_bench_jhmdb_selects_clips_and_refuses_earlier_results(
    capsys, jhmdb: Path, tmp_path: Path
) -> None:
    split = tmp_path / "testlist_split1.txt"
    split.write_text(
        "# CRW-style: frames folder, then the annotation\n"
        "../JHMDB/Rename_Images/walk/moving_clip ../JHMDB/joint_positions/walk/moving_clip/"
        "joint_positions.mat\n"
    )
    out, report = tmp_path / "out", tmp_path / "pck.json"
    args = ["--root", jhmdb, "--out", out, "--method", "identity", "--json", report]
    assert bench(capsys, *args, "--split", split)[0] == 0
    assert set(json.loads(report.read_text())["clips"]) == {"moving_clip"}
    code, _, err = bench(capsys, *args, "--clips", "moving_clip")
    assert code == 1 and "--overwrite" in err
    assert bench(capsys, *args, "--clips", "moving_clip", "--overwrite")[0] == 0
    code, _, err = bench(capsys, *args, "--clips", "nope", "--overwrite")
    assert code == 1 and "nope" in err
    code, _, err = bench(capsys, *args, "--clips", "a", "--split", split)
    assert code == 2 and "not allowed with" in err


def test_bench_jhmdb_without_clips_names_the_root(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = bench(
        capsys, "--root", tmp_path / "empty", "--out", tmp_path / "out", "--method", "identity",
        "--json", tmp_path / "pck.json",
    )  # fmt: skip
    assert code == 1 and str(tmp_path / "empty") in err
    assert not (tmp_path / "pck.json").exists()


def test_read_split_takes_the_last_folder_of_the_first_path(tmp_path: Path) -> None:
    split = tmp_path / "split.txt"
    split.write_text(
        "/data/JHMDB/Rename_Images/jump/clip_a /data/JHMDB/joint_positions/jump/clip_a\n"
        "\n"
        "joint_positions/sit/clip_b/joint_positions.mat\n"
        "Rename_Images\\wave\\clip_c\\00001.png\n"
        "clip_d\n"
        "clip_a\n"
    )
    assert read_split(split) == ["clip_a", "clip_b", "clip_c", "clip_d"]
    split.write_text("joint_positions.mat\n")
    with pytest.raises(ColortrackError, match="line 1"):
        read_split(split)


def test_bench_jhmdb_has_help(capsys) -> None:
    assert main(["bench", "jhmdb", "--help"]) == 0
    assert "--split" in capsys.readouterr().out


def test_bench_jhmdb_real_clip(capsys, data_dir: Path, tmp_path: Path) -> None:
    """The real sample: joint_positions.mat at its root, the frames in a folder beside it (next
    to example_image/, which must not be taken for the clip)."""
    # This clip is in JHMDB split-1 TRAIN, not the test split: a pipeline test only, not a score.
    root = data_dir / "jhmdb-sample"
    if not (root / "joint_positions.mat").is_file():
        pytest.skip(f"no JHMDB sample at {root}")
    report = tmp_path / "pck.json"
    code, _, _ = bench(
        capsys, "--root", root, "--out", tmp_path / "out", "--method", "flow", "--json", report
    )
    assert code == 0
    scores = json.loads(report.read_text())
    clip = "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    assert list(scores["clips"]) == [clip] and scores["frames"] == {clip: 40}
    assert 0.0 <= scores["PCK@0.1"] <= scores["PCK@0.2"] <= scores["PCK@0.5"] <= 100.0
    assert scores["PCK@0.2"] > 30.0  # flow follows the keeper; not moving at all scores ~2
