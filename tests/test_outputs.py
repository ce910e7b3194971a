"""Output folders appear whole or not at all, and only one command writes into one at a time."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colortrack.data.annotations import write_mask
from colortrack.data.outputs import MANIFEST, locked, output_folder, write_behind
from tests.conftest import cli, moving_texture, recorded, tmpfs, write_video

H, W = 48, 64


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[Path]:
    """Staging folders, lock files and unfinished writes left under `folder` (the manifest of
    what a run wrote is meant to stay)."""
    return [p for p in folder.rglob(".*") if p.name != MANIFEST]


def track(clip: tuple[Path, Path], out: Path, *options: object) -> list[object]:
    return ["track", clip[0], "--mask", clip[1], "--out", out, "--method", "identity", *options]


@pytest.fixture
def earlier(capsys, clip, tmp_path) -> tuple[Path, dict[str, str]]:
    """An output folder holding a complete earlier run, and its snapshot."""
    out = tmp_path / "out"
    assert cli(capsys, *track(clip, out))[0] == 0
    (out / "notes.txt").write_text("mine")
    return out, snapshot(out)


def test_a_failed_overwrite_keeps_every_earlier_result(capsys, clip, tmp_path, earlier) -> None:
    """The new run dies at frame 3 of 6, after three masks were written: none of them shows."""
    out, before = earlier
    frames = moving_texture(6, W, H)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame if i != 3 else frame[:20]).save(folder / f"{i}.png")
    code, err = cli(capsys, *track((folder, clip[1]), out, "--overwrite"))
    assert code == 1 and "frame size" in err
    assert snapshot(out) == before and not hidden(tmp_path)


def test_an_overwrite_replaces_the_results_as_a_whole(capsys, clip, tmp_path, earlier) -> None:
    """A longer earlier run's extra masks go; a folder where a mask goes is replaced."""
    out, _ = earlier
    (out / "00099.png").write_bytes(b"from a longer run")
    recorded(out, "00099.png")
    (out / "00002.png").unlink()
    (out / "00002.png").mkdir()
    code, err = cli(capsys, *track(clip, out))
    assert code == 1 and "already holds tracking outputs" in err
    assert cli(capsys, *track(clip, out, "--overwrite"))[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [MANIFEST] + [f"{i:05d}.png" for i in range(6)] + [
        "confidence.csv", "notes.txt", "overlay.mp4"]
    assert (out / "00002.png").is_file() and (out / "notes.txt").read_text() == "mine"
    assert not hidden(tmp_path)


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_overwrite_keeps_every_earlier_result(tmp_path, stop, code) -> None:
    """Stopped while the new results are written: the earlier ones stay as they were."""
    video = write_video(tmp_path / "long.mp4", moving_texture(300, 128, 96), 25)
    write_mask(tmp_path / "m.png", np.pad(np.ones((30, 30), np.uint8), ((20, 46), (20, 78))))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("00000.png", "00001.png", "overlay.mp4"):
        (out / name).write_bytes(b"earlier " + name.encode())
    recorded(out, "00000.png", "00001.png", "overlay.mp4")
    before = snapshot(out)
    command = [sys.executable, "-m", "colortrack", "-q", "track", str(video), "--mask",
               str(tmp_path / "m.png"), "--out", str(out), "--method", "flow", "--overwrite"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # generous: the machine may be busy
    while not list(tmp_path.glob(".out.colortrack-*/00003.png")):
        assert process.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)
    process.send_signal(stop)
    _, err = process.communicate(timeout=30)
    assert process.returncode == code and err == "colortrack: interrupted\n"
    assert snapshot(out) == before and not hidden(tmp_path)


def test_a_second_writer_is_refused(capsys, clip, tmp_path, earlier) -> None:
    out, before = earlier
    with locked(out):
        code, err = cli(capsys, *track(clip, out, "--overwrite"))
    assert code == 1
    assert err == f"colortrack: error: {out}: in use by another colortrack command; wait for " \
                  "it or choose another output\n"
    assert snapshot(out) == before
    assert cli(capsys, *track(clip, out, "--overwrite"))[0] == 0  # the lock went with its holder


def test_the_lock_holds_across_processes(capsys, clip, tmp_path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from colortrack.data.outputs import locked\n"
         f"with locked({str(out)!r}):\n print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, err = cli(capsys, *track(clip, out))
        assert code == 1 and "in use by another colortrack command" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_block_leaves_nothing_and_removes_the_parents_it_made(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), output_folder(target, overwrite=False, ours=bool) as stage:
        (stage / "x.txt").write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_writes_behind_run_in_order_and_are_all_done_on_leaving() -> None:
    done: list[int] = []
    with write_behind(depth=2) as submit:
        for i in range(20):
            submit(lambda i: (time.sleep(0.001), done.append(i)), i)
    assert done == list(range(20))


def test_a_failed_write_behind_stops_the_rest_and_reaches_the_caller() -> None:
    done: list[int] = []

    def write(i: int) -> None:
        if i == 3:
            raise OSError(28, "No space left on device")
        done.append(i)

    with pytest.raises(OSError, match="No space"), write_behind(depth=2) as submit:
        for i in range(100):
            submit(write, i)
    assert done == [0, 1, 2]


def test_a_killed_run_s_staging_folder_is_cleared_by_the_next(tmp_path) -> None:
    stale = tmp_path / ".out.colortrack-abc.tmp"
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"half")
    with output_folder(tmp_path / "out", overwrite=False, ours=bool) as stage:
        (stage / "00000.png").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _davis(root: Path, bad_frame: bool) -> Path:
    """Two sequences; the second's frame 2 damaged when `bad_frame`."""
    for seq in ("seqa", "seqb"):
        images, annotations = root / "JPEGImages/480p" / seq, root / "Annotations/480p" / seq
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(moving_texture(4, W, H)):
            Image.fromarray(frame).save(images / f"{t:05d}.jpg", quality=95)
            ids = np.zeros((H, W), np.uint8)
            ids[10:30, 10 + t:30 + t] = 255
            Image.fromarray(ids).save(annotations / f"{t:05d}.png")
    if bad_frame:
        (root / "JPEGImages/480p/seqb/00002.jpg").write_bytes(b"not a jpeg")
    return root


def test_a_failed_benchmark_leaves_nothing_and_the_rerun_needs_no_overwrite(capsys, tmp_path
                                                                              ) -> None:
    root, out = _davis(tmp_path / "davis", bad_frame=True), tmp_path / "bench"
    argv = ["bench", "davis", "--root", root, "--out", out, "--method", "identity"]
    code, err = cli(capsys, *argv)
    assert code == 1 and "00002.jpg: cannot read image" in err
    assert not out.exists() and not hidden(tmp_path)
    _davis(root, bad_frame=False)
    assert cli(capsys, *argv, "--json", tmp_path / "scores.json")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "seqa", "seqb"]
    assert json.loads((tmp_path / "scores.json").read_text())["method"] == "identity"


def test_a_second_writer_of_a_file_is_refused(capsys, clip, tmp_path) -> None:
    out = tmp_path / "embedding.mp4"
    with locked(out):
        code, err = cli(capsys, "embed", clip[0], "--out", out)
    assert code == 1 and "in use by another colortrack command" in err
    assert not out.exists()


def test_an_output_reached_by_a_link_is_replaced_where_it_lies(capsys, clip, tmp_path) -> None:
    real = tmp_path / "results"
    real.mkdir()
    (real / "00000.png").write_bytes(b"earlier")
    recorded(real, "00000.png")
    (tmp_path / "link").symlink_to(real)
    assert cli(capsys, *track(clip, tmp_path / "link", "--overwrite"))[0] == 0
    assert (tmp_path / "link").is_symlink() and (real / "overlay.mp4").is_file()
    assert (real / "00000.png").read_bytes() != b"earlier" and not hidden(tmp_path)


def test_a_stopped_demo_leaves_nothing(tmp_path) -> None:
    """Stopped after its first method's results were written: no partial demo, so the rerun
    needs no --overwrite."""
    out = tmp_path / "demo"
    process = subprocess.Popen([sys.executable, "-m", "colortrack", "-q", "demo", "--out",
                                str(out), "--model", "nope.safetensors"],
                               stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and err.count("\n") == 1 and not out.exists()
    process = subprocess.Popen([sys.executable, "-m", "colortrack", "-q", "demo", "--out",
                                str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180  # a few seconds on an idle machine
    while not list(tmp_path.glob(".demo.colortrack-*.tmp/model")):
        assert process.poll() is None and time.monotonic() < deadline, "the demo did not run"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err == "colortrack: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_keeps_every_earlier_result(capsys, clip, tmp_path) -> None:
    """The results cannot be renamed over a mount point (where the machine allows mounting):
    the error comes at the very last step, and the earlier results must survive it whole."""
    with tmpfs(tmp_path / "out", "1m") as out:
        (out / "00000.png").write_bytes(b"earlier")
        recorded(out, "00000.png")
        before = snapshot(out)
        code, err = cli(capsys, *track(clip, out, "--overwrite"))
        assert code == 1 and err.startswith(f"colortrack: error: {out}: cannot write (")
        assert err.count("\n") == 1
        assert snapshot(out) == before
        assert not hidden(tmp_path)
