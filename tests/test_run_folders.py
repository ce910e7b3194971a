"""A training run folder is never reused silently: continued with --resume, replaced with
--overwrite, otherwise refused; a damaged run is a one-line error that destroys nothing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from colortrack.cli import main
from colortrack.data.outputs import locked
from tests.conftest import one_line, tmpfs
from tests.test_train import FAST, train


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(videos, tmp_path_factory) -> Path:
    """A complete 3-step run, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["-q", "train", str(videos), "--out", str(out), "--steps", "3",
                 *sum((["--set", s] for s in FAST), [])]) == 0
    return out


@pytest.fixture
def earlier(finished, tmp_path) -> Path:
    subprocess.run(["cp", "-a", str(finished), str(tmp_path / "run")], check=True)
    return tmp_path / "run"


@pytest.mark.parametrize("kept", ["metrics.csv", "previews", "ckpt-00000003"])
def test_anything_of_a_run_needs_resume_or_overwrite(capsys, videos, earlier, kept) -> None:
    for name in {"latest", "model.safetensors", "metrics.csv", "metrics.png", "previews",
                 "ckpt-00000003"} - {kept}:
        subprocess.run(["rm", "-r", str(earlier / name)], check=True)
    before = snapshot(earlier)
    code, err = train(capsys, videos, earlier, "--steps", "3")
    assert code == 2
    one_line(err, f"already holds a training run ({kept}, ...)", "--resume", "--overwrite")
    assert snapshot(earlier) == before


def test_a_missing_pointer_is_an_error_not_a_fresh_start(capsys, videos, earlier) -> None:
    (earlier / "latest").unlink()
    before = snapshot(earlier)
    code, err = train(capsys, videos, earlier, "--resume", "--steps", "6")
    assert code == 1
    one_line(err, "latest: missing", "write ckpt-00000003 into it")
    assert snapshot(earlier) == before


@pytest.mark.parametrize("pointer", [b"\xff\xfe", b"../../elsewhere", b"ckpt-00000009"])
def test_a_damaged_pointer_is_one_line(capsys, videos, earlier, pointer) -> None:
    (earlier / "latest").write_bytes(pointer)
    before = snapshot(earlier)
    code, err = train(capsys, videos, earlier, "--resume", "--steps", "6")
    assert code == 1
    one_line(err, "latest" if pointer != b"ckpt-00000009" else "ckpt-00000009")
    assert snapshot(earlier) == before


@pytest.mark.parametrize(("name", "data"), [("metrics.csv", b"step,loss\n\xff\xfe,1\n"),
                                            ("metrics.csv", b"step,loss\nseven,1\n"),
                                            ("ckpt-00000003/state.json", b"\xff{"),
                                            ("ckpt-00000003/optimizer.safetensors", b"x")])
def test_damaged_files_in_a_run_are_one_line_on_resume(capsys, videos, earlier, name, data):
    (earlier / name).write_bytes(data)
    before = snapshot(earlier)
    code, err = train(capsys, videos, earlier, "--resume", "--steps", "6")
    assert code == 1
    one_line(err, name.split("/")[-1])
    assert snapshot(earlier) == before


def test_overwrite_replaces_the_run_once_it_is_checked(capsys, videos, earlier) -> None:
    before = snapshot(earlier)
    code, err = train(capsys, videos, earlier, "--overwrite", "--steps", "2", "--batch", "0")
    assert code == 2 and snapshot(earlier) == before  # a bad setting: the old run stays
    assert train(capsys, videos, earlier, "--overwrite", "--steps", "2")[0] == 0
    assert (earlier / "latest").read_text() == "ckpt-00000002"
    assert not (earlier / "ckpt-00000003").exists()


def test_a_run_folder_inside_the_videos_is_refused(capsys, videos) -> None:
    before = snapshot(videos)
    code, err = train(capsys, videos, videos / "run", "--steps", "3")
    assert code == 1
    one_line(err, "lies inside the input")
    assert snapshot(videos) == before and not (videos / "run").exists()


def test_a_second_training_run_into_one_folder_is_refused(capsys, videos, earlier) -> None:
    before = snapshot(earlier)
    with locked(earlier):
        code, err = train(capsys, videos, earlier, "--resume", "--steps", "6")
    assert code == 1
    one_line(err, "in use by another colortrack command")
    assert snapshot(earlier) == before


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(capsys, videos, tmp_path):
    """A tmpfs just big enough for the first checkpoints (where the machine allows mounting)."""
    with tmpfs(tmp_path / "disk", "12m") as disk:
        code, err = train(capsys, videos, disk / "run", "--steps", "60", "--set",
                          "checkpoint_every=1")
        assert code == 1, err
        one_line(err, "No space left on device", "the last complete checkpoint is kept")
        latest = (disk / "run" / "latest").read_text()
        assert (disk / "run" / latest / "state.json").is_file()
        assert not list((disk / "run").rglob(".*"))


def test_a_refused_run_leaves_no_folders(capsys, videos, tmp_path) -> None:
    code, err = train(capsys, videos, tmp_path / "a" / "b" / "run", "--batch", "0")
    assert code == 2 and list(tmp_path.iterdir()) == []
