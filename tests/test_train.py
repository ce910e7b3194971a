"""Training end to end on synthetic video: it learns, it resumes exactly, it runs under DDP."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colortrack.cli import main
from colortrack.errors import UsageError
from colortrack.eval.demo_clip import DemoScore
from colortrack.training.report import TrainSummary
from colortrack.training.train import run

TINY = ["size=64", "batch=4", "workers=0", "cache_short_side=64", "kmeans_pixels=3000",
        "log_every=1", "checkpoint_every=3", "preview_every=5", "max_gap=1", "val_clips=8",
        "val_every=5", "scale=0.6,1.0", "demo_frames=0"]
FAST = [*TINY, "kmeans_pixels=256"]  # k-means on few pixels: the slow part of a tiny run


def train(capsys: pytest.CaptureFixture[str], videos: Path, out: Path, *options: object
          ) -> tuple[int, str]:
    """`colortrack train VIDEOS --out OUT OPTIONS` with the FAST settings, in-process: its exit
    code and stderr."""
    code = main(["-q", "train", str(videos), "--out", str(out), *map(str, options),
                 *sum((["--set", s] for s in FAST), [])])  # fmt: skip
    return code, capsys.readouterr().err


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_learns_to_colorize_better_than_the_color_prior(videos, tmp_path):
    out = run([videos], preset="cpu", out=tmp_path / "run", steps=40, progress=False,
              overrides=[*TINY, "lr=3e-3", "holdout=texture1"]).out
    first, last = rows(out)[4], rows(out)[-1]
    assert float(last["val_loss"]) < 0.8 * float(last["prior_loss"])
    assert float(last["val_loss"]) < float(first["val_loss"])
    assert (out / "model.safetensors").is_file() and list((out / "previews").glob("*.png"))
    pytest.importorskip("matplotlib")
    assert (out / "metrics.png").stat().st_size > 10_000  # the curves, refreshed at each log


def test_a_run_ends_with_its_demo_clip_score_and_how_to_use_the_model(videos, tmp_path, capsys):
    out = tmp_path / "run"
    settings = sum((["--set", s] for s in [*FAST, "demo_frames=4"]), [])
    assert main(["-q", "train", str(videos), "--out", str(out), "--steps", "3", *settings]) == 0
    shown = capsys.readouterr().out
    assert f"trained 3 steps into {out}" in shown and "final training loss" in shown
    assert "demo clip J&F" in shown and "copying the first mask" in shown
    assert f"colortrack track VIDEO --mask FIRST.png --out RESULT --model {out}" in shown
    assert list((out / "previews").glob("*.png"))  # the first checkpoint's, before preview_every


def test_a_model_that_does_not_beat_copying_the_first_mask_gets_a_warning(tmp_path):
    def summary(model: float) -> str:
        return TrainSummary(tmp_path, 30, 95.0, 0.2, 1.06, None, DemoScore(model, 31.8)).text()

    warned = [line for line in summary(21.9).splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "more steps" in warned[0] and "0.2 minutes" in warned[0]
    assert "warning" not in summary(88.2)
    assert "1 min 35 s" in summary(88.2)


def test_resume_continues_exactly(videos, tmp_path):
    straight = run([videos], preset="cpu", out=tmp_path / "a", steps=6, progress=False,
                   overrides=TINY).out
    stopped = run([videos], preset="cpu", out=tmp_path / "b", steps=3, progress=False,
                  overrides=TINY).out
    with pytest.raises(UsageError, match="--resume"):
        run([videos], preset="cpu", out=stopped, steps=6, progress=False, overrides=TINY)
    run([videos], preset="cpu", out=stopped, steps=6, resume=True, progress=False)
    a = [float(r["loss"]) for r in rows(straight)]
    b = [float(r["loss"]) for r in rows(stopped)]
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_the_command_exits_with_data_workers(videos, tmp_path):
    """Data workers ignore SIGTERM, so the run must stop them itself; a run that wrote its
    curves (held-out clips, matplotlib) once waited on them forever after its last line."""
    settings = sum((["--set", s] for s in [*TINY, "workers=2", "holdout=texture1"]), [])
    command = [sys.executable, "-m", "colortrack", "-q", "train", str(videos), "--out",
               str(tmp_path / "run"), "--steps", "5", *settings]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_two_process_ddp_on_cpu(videos, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port=29517", "-m", "colortrack", "train", str(videos),
               "--preset", "cpu", "--out", str(tmp_path / "ddp"), "--steps", "3", "-q",
               *sum((["--set", s] for s in TINY), [])]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(rows(tmp_path / "ddp")) == 3


@pytest.mark.parametrize("cache", [64, 0])
def test_clip_dataset_reads_by_cache_or_by_seeking_and_skips_bad_videos(videos, tmp_path, cache):
    from colortrack.config import TrainConfig
    from colortrack.training.clips import ClipDataset, find_videos

    (tmp_path / "broken.mp4").write_text("not a video")
    cfg = TrainConfig(size=32, refs=3, fps=6, max_gap=2, cache_short_side=cache)
    dataset = ClipDataset([*find_videos([videos]), tmp_path / "broken.mp4"], cfg, length=4)
    assert dataset.skipped == 1
    clip = dataset[3]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype.is_floating_point is False
    assert (dataset[3] == clip).all()  # item i is a pure function of (seed, i)
