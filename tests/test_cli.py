"""The command line: outputs on disk, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colortrack.cli import main
from colortrack.data.annotations import write_mask
from colortrack.data.keypoints import write_track_json
from colortrack.data.video_writer import VideoWriter

H, W, SHIFT, N = 48, 64, 2, 6


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    texture = (rng.random((H, W + 20, 3)) * 255).astype(np.uint8)
    return [np.ascontiguousarray(texture[:, 12 - SHIFT * t : 12 - SHIFT * t + W]) for t in range(N)]


def masks() -> list[np.ndarray]:
    out = []
    for t in range(N):
        ids = np.zeros((H, W), dtype=np.uint8)
        ids[15:35, 20 + SHIFT * t : 40 + SHIFT * t] = 1
        out.append(ids)
    return out


@pytest.fixture()
def clip(tmp_path: Path) -> tuple[Path, Path]:
    video, mask = tmp_path / "clip.mp4", tmp_path / "first.png"
    with VideoWriter(video, fps=10, crf=10) as writer:
        for frame in frames():
            writer.write(frame)
    write_mask(mask, masks()[0])
    return video, mask


@pytest.fixture()
def davis(tmp_path: Path) -> Path:
    """A one-sequence DAVIS-2016 layout: JPEG frames and binary 0/255 masks."""
    root = tmp_path / "davis"
    images, annotations = root / "JPEGImages/480p/seqa", root / "Annotations/480p/seqa"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t, (frame, ids) in enumerate(zip(frames(), masks(), strict=True)):
        Image.fromarray(frame).save(images / f"{t:05d}.jpg", quality=95)
        Image.fromarray(ids * 255).save(annotations / f"{t:05d}.png")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("method", ["identity", "flow"])
def test_track_writes_masks_and_overlay(capsys, clip, tmp_path: Path, method: str) -> None:
    video, mask = clip
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "track", video, "--mask", mask, "--out", out, "--method", method)
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(N)]
    assert (out / "overlay.mp4").stat().st_size > 0
    assert f"tracked {N} frames" in stdout


def test_track_points_writes_tracks_and_overlay(capsys, clip, tmp_path: Path) -> None:
    video, _ = clip
    points, out = tmp_path / "points.json", tmp_path / "out"
    xy = np.array([[25.0, 20.0], [35.0, 30.0]], dtype=np.float32)
    write_track_json(points, ["a", "b"], [(0, 1)], [(0, xy, np.array([True, True]))])
    code, stdout, _ = run(
        capsys, "track", video, "--points", points, "--out", out, "--method", "flow"
    )
    assert code == 0 and f"tracked {N} frames" in stdout
    track = json.loads((out / "points.json").read_text())
    assert [entry["frame"] for entry in track["frames"]] == list(range(N))
    last = np.array(track["frames"][-1]["points"])[:, :2]
    np.testing.assert_allclose(last, xy + [SHIFT * (N - 1), 0], atol=2.0)
    assert (out / "points.csv").read_text().count("\n") == 1 + 2 * N
    assert (out / "overlay.mp4").stat().st_size > 0


def test_existing_output_needs_overwrite(capsys, clip, tmp_path: Path) -> None:
    video, mask = clip
    args = ["track", video, "--mask", mask, "--out", tmp_path / "out", "--method", "identity"]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 1 and "--overwrite" in err and err.count("\n") == 1
    assert run(capsys, *args, "--overwrite")[0] == 0


def test_missing_video_is_one_line_exit_1(capsys, tmp_path: Path) -> None:
    write_mask(tmp_path / "m.png", masks()[0])
    code, _, err = run(
        capsys, "track", tmp_path / "no.mp4", "--mask", tmp_path / "m.png", "--out", tmp_path / "o"
    )
    assert code == 1
    assert err.startswith("colortrack: error: ") and err.count("\n") == 1


def test_usage_errors_exit_2(capsys, clip, tmp_path: Path) -> None:
    video, mask = clip
    assert run(capsys, "track", video, "--mask", mask, "--bogus")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    code, _, err = run(
        capsys, "track", video, "--mask", mask, "--out", tmp_path / "o", "--set", "topk=x"
    )
    assert code == 2 and "topk" in err


def test_eval_davis_scores_ground_truth_as_perfect(capsys, davis: Path, tmp_path: Path) -> None:
    report = tmp_path / "scores.json"
    predictions = davis / "Annotations" / "480p"
    code, stdout, _ = run(
        capsys, "eval", "davis", "--root", davis, "--predictions", predictions, "--json", report
    )
    assert code == 0 and "seqa" in stdout and "J&F-Mean" in stdout
    scores = json.loads(report.read_text())
    assert scores["J&F"] == pytest.approx(100.0)
    assert scores["sequences"]["seqa"]["J"] == pytest.approx(100.0)


def test_bench_davis_identity(capsys, davis: Path, tmp_path: Path) -> None:
    report, out = tmp_path / "bench.json", tmp_path / "bench"
    code, stdout, _ = run(
        capsys, "bench", "davis", "--root", davis, "--out", out, "--method", "identity",
        "--json", report,
    )  # fmt: skip
    assert code == 0 and "s/frame" in stdout
    assert len(list((out / "seqa").glob("*.png"))) == N
    scores = json.loads(report.read_text())
    assert scores["method"] == "identity" and set(scores["seconds"]) == {"seqa"}
    assert 0.0 < scores["J&F"] < 100.0
    shown = next(line.split() for line in stdout.splitlines() if line.startswith("Global"))
    assert shown[1:4] == [f"{scores[k]:.1f}" for k in ("J&F", "J", "J-Recall")]  # one scale
    assert (
        run(capsys, "bench", "davis", "--root", davis, "--out", out, "--method", "identity")[0] == 1
    )


def test_bench_davis_reports_j_and_f_after_each_correction(capsys, davis: Path,
                                                           tmp_path: Path) -> None:
    report = tmp_path / "scores.json"
    assert main(["-q", "bench", "davis", "--root", str(davis), "--out", str(tmp_path / "p"),
                 "--method", "pixels", "--corrections", "2", "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert len(scores["corrections"]) == 3 and len(scores["corrections_oracle"]) == 3
    assert scores["corrections"][0] == pytest.approx(scores["J&F"], abs=0.05)
    assert "oracle" in capsys.readouterr().out


def test_bench_badja_identity(capsys, davis: Path, tmp_path: Path) -> None:
    """BADJA joints are [row, col] at 1920x1080 over 37 slots; the bench scales them to frames."""
    joints = [[0, 0]] * 37
    joints[8], joints[9] = [25 * 1080 / H, 30 * 1920 / W], [20 * 1080 / H, 45 * 1920 / W]
    entries = [
        {"image_path": f"x/seqa/{t:05d}.jpg", "joints": joints, "visibility": [True] * 37}
        for t in (0, 2, 4)
    ]
    (tmp_path / "badja").mkdir()
    (tmp_path / "badja" / "seqa.json").write_text(json.dumps(entries))
    report = tmp_path / "badja.json"
    code, stdout, _ = run(
        capsys, "bench", "badja", "--root", tmp_path / "badja", "--davis-root", davis,
        "--out", tmp_path / "out", "--method", "identity", "--json", report,
    )  # fmt: skip
    assert code == 0 and "seqa" in stdout
    scores = json.loads(report.read_text())
    assert scores["PCK@0.1"] == pytest.approx(100.0)
    assert scores["method"] == "identity" and set(scores["sequences"]) == {"seqa"}


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["track"],
        ["track-many"],
        ["eval", "davis"],
        ["bench", "davis"],
        ["bench", "badja"],
        ["train"],
        ["info"],
        ["colorize"],
        ["embed"],
        ["demo"],
    ],
)
def test_every_command_has_help(capsys, command: list[str]) -> None:
    assert main([*command, "--help"]) == 0
    assert "usage: colortrack" in capsys.readouterr().out


@pytest.mark.parametrize("command,kinds", [
    (["track"], ("PropagationConfig",)), (["track-many"], ("PropagationConfig",)),
    (["bench", "davis"], ("PropagationConfig",)),
    (["app"], ("PropagationConfig",)), (["train"], ("ModelConfig", "TrainConfig"))])
def test_help_lists_every_setting_with_its_default(capsys, command, kinds) -> None:
    import dataclasses

    import colortrack.config as config

    code, shown, _ = run(capsys, *command, "--help")
    assert code == 0
    for kind in kinds:
        for f in dataclasses.fields(getattr(config, kind)):
            assert f.metadata["help"], f.name
            nested = f.name == "stages"  # set through presets only
            assert (f"  {f.name}=" in shown) != nested, f.name
