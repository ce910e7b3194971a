"""Training survives faults: killed at any moment it resumes from its last complete checkpoint,
a diverging loss stops it and keeps that checkpoint, and damaged or foreign checkpoints are
clear errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import colortrack.model.checkpoint
import colortrack.training.train
from colortrack.cli import main
from colortrack.config import preset
from colortrack.errors import ColortrackError
from colortrack.model.checkpoint import Checkpoints, load_model
from colortrack.model.network import Encoder
from colortrack.training.train import run
from tests.test_train import FAST, rows, train


def hidden(folder: Path) -> list[Path]:
    """Temporary files and folders (names starting with '.') anywhere in a run."""
    return list(folder.rglob(".*"))


def steps_logged(out: Path) -> list[int]:
    return [int(row["step"]) for row in rows(out)]


def test_sigkill_at_any_moment_then_resume(videos, tmp_path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "colortrack", "-q", "train", str(videos), "--out", str(out),
               "--steps", "500", *sum((["--set", s] for s in [*FAST, "checkpoint_every=2"]), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "latest").is_file():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert process.returncode == -9
    # What a kill in the middle of the next checkpoint would have left: a partial hidden folder.
    (out / ".ckpt-99999999.tmp").mkdir()
    (out / ".ckpt-99999999.tmp" / "model.safetensors").write_bytes(b"partial")
    last = int((out / "latest").read_text().strip().removeprefix("ckpt-"))
    run([videos], out=out, resume=True, steps=last + 3, progress=False)
    assert steps_logged(out) == list(range(1, last + 4))  # complete and unique
    assert (out / "latest").read_text() == f"ckpt-{last + 3:08d}"
    assert not hidden(out), hidden(out)
    assert load_model(out)[2]["step"] == last + 3


def test_sigterm_to_the_process_group_with_workers_stops_cleanly(videos, tmp_path) -> None:
    """As a terminal's Ctrl-C or a job scheduler does: the signal reaches the DataLoader
    workers too, and the run must still checkpoint and stop with one line."""
    out = tmp_path / "run"
    settings = [*FAST, "workers=2", "checkpoint_every=1000"]
    command = [sys.executable, "-m", "colortrack", "-q", "train", str(videos), "--out", str(out),
               "--steps", "500", *sum((["--set", s] for s in settings), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not steps_logged(out) if (out / "metrics.csv").is_file() else True:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "colortrack: interrupted"
    step = load_model(out)[2]["step"]
    assert (out / "latest").read_text() == f"ckpt-{step:08d}" and step >= 1


def test_nan_loss_stops_with_a_clear_message(capsys, videos, tmp_path) -> None:
    code, err = train(capsys, videos, tmp_path / "run", "--steps", "6", "--lr", "1e30")
    assert code == 1
    assert err.startswith("colortrack: error: loss became nan at step ") and err.count("\n") == 1
    assert "lower --lr" in err and not hidden(tmp_path / "run")


def test_nan_keeps_the_last_good_checkpoint_then_resumes(capsys, videos, tmp_path, monkeypatch):
    real, calls = colortrack.training.train.colorization_loss, []

    def diverges_at_step_5(*args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        loss, accuracy, probs = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 5 else loss), accuracy, probs

    monkeypatch.setattr(colortrack.training.train, "colorization_loss", diverges_at_step_5)
    out = tmp_path / "run"
    code, err = train(capsys, videos, out, "--steps", "7")  # checkpoints every 3 steps
    assert code == 1 and "loss became nan at step 5" in err and err.count("\n") == 1
    assert (out / "latest").read_text() == "ckpt-00000003" and not hidden(out)
    assert load_model(out)[2]["step"] == 3
    monkeypatch.setattr(colortrack.training.train, "colorization_loss", real)
    assert main(["-q", "train", str(videos), "--out", str(out), "--resume"]) == 0
    assert steps_logged(out) == list(range(1, 8))


def test_foreign_or_damaged_checkpoints_are_clear_errors(capsys, videos, tmp_path) -> None:
    out = tmp_path / "run"
    assert train(capsys, videos, out, "--steps", "3")[0] == 0
    code, err = train(capsys, videos, out, "--steps", "6", "--resume", "--preset", "paper")
    assert code == 2
    assert err == ("colortrack: error: the run to resume was trained with preset 'cpu', not "
                   "'paper'; leave out --preset or choose another --out\n")  # fmt: skip
    code, err = train(capsys, videos, out, "--steps", "6")
    assert code == 2 and "already holds a training run (ckpt-00000003, ...); pass --resume" in err

    folder = out / "ckpt-00000003"
    state = (folder / "state.json").read_text()
    (folder / "state.json").write_text(state[:40])
    code, err = train(capsys, videos, out, "--resume")
    assert code == 1 and err.count("\n") == 1
    assert f"{folder / 'state.json'}: damaged checkpoint state" in err
    (folder / "state.json").write_text(state)

    model = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(model[:1000])
    code, err = train(capsys, videos, out, "--resume")
    assert code == 1 and f"{folder / 'model.safetensors'}: not a readable safetensors" in err
    code, err = train(capsys, videos, tmp_path / "other", "--resume", "--steps", "0")
    assert code == 2 and "batch and steps must be >= 1" in err

    capsys.readouterr()
    damaged = folder / "model.safetensors"
    assert main(["-q", "track", str(videos / "texture0.mp4"), "--mask", str(damaged),
                 "--out", str(tmp_path / "o"), "--model", str(damaged)]) == 1  # fmt: skip
    assert "not a readable safetensors model" in capsys.readouterr().err


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    """A full disk while saving leaves `latest` and its folder as they were, and no temp files."""
    encoder = Encoder(preset("cpu").model)
    optimizer = torch.optim.Adam(encoder.parameters())
    centroids = torch.zeros(encoder.cfg.num_colors, 2)
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(encoder, centroids, optimizer, {"step": 1})

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(colortrack.model.checkpoint, "save_file", full)
    with pytest.raises(ColortrackError, match="No space left on device"):
        checkpoints.save(encoder, centroids, optimizer, {"step": 2})
    assert checkpoints.latest() == tmp_path / "ckpt-00000001" and not hidden(tmp_path)

    with torch.no_grad():
        next(encoder.parameters()).fill_(float("inf"))
    with pytest.raises(ColortrackError, match="NaN or inf by step 3"):
        checkpoints.save(encoder, centroids, optimizer, {"step": 3})
    assert checkpoints.latest() == tmp_path / "ckpt-00000001" and not hidden(tmp_path)
