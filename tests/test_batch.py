"""`colortrack track-many`: a manifest of videos, resumable after a kill, in parallel processes
and in shares (job arrays, torchrun), each video's results those of `colortrack track`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from colortrack.data.annotations import read_mask, write_mask
from colortrack.track.batch import parse_shard, process_share, rank_device
from tests.conftest import cli, moving_texture, one_line, write_video


def make_clips(folder: Path, count: int, frames: int, manifest: str = "videos.jsonl") -> Path:
    """`count` clips of a moving texture (speeds differ), a two-object first mask shared by
    all, and a JSON Lines manifest of them with paths relative to it."""
    folder.mkdir(exist_ok=True)
    ids = np.zeros((48, 64), dtype=np.uint8)
    ids[10:30, 20:40], ids[32:46, 4:16] = 1, 2
    write_mask(folder / "first.png", ids)
    lines = []
    for i in range(count):
        write_video(folder / f"clip{i:02d}.mp4",
                    moving_texture(frames, 64, 48, (i % 3 - 1, i % 2 + 1)), 10)
        lines.append(json.dumps({"video": f"clip{i:02d}.mp4", "annotation": "first.png"}))
    (folder / manifest).write_text("\n".join(lines) + "\n")
    return folder / manifest


def masks_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_mask(p) for p in sorted(folder.glob("*.png"))}


def assert_same_as_track(capsys: pytest.CaptureFixture[str], tmp: Path, batch: Path,
                         clips: Path, names: list[str], *method: str) -> None:
    """Each video's masks equal a `colortrack track` run's on it."""
    for name in names:
        single = tmp / "single" / name
        assert cli(capsys, "track", clips / f"{name}.mp4", "--mask", clips / "first.png",
                   "--out", single, *method)[0] == 0
        ours, theirs = masks_of(batch / name), masks_of(single)
        assert ours.keys() == theirs.keys() and len(ours) > 1
        for frame, ids in theirs.items():
            np.testing.assert_array_equal(ours[frame], ids, err_msg=f"{name}/{frame}")


def finished(out: Path) -> dict[str, int]:
    """The videos whose results are in place, with done.json's time (hidden folders are ones
    being written)."""
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("[!.]*/done.json")}


def colortrack(*argv: object) -> list[str]:
    return [sys.executable, "-m", "colortrack", "-q", *map(str, argv)]


def test_killed_batch_resumes_with_only_the_missing_clips(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "clips", 20, 5)
    out = tmp_path / "out"
    run = subprocess.Popen(colortrack("track-many", manifest, "--out", out, "--method", "pixels",
                                      "--workers", 2), start_new_session=True)
    deadline = time.monotonic() + 120
    while len(finished(out)) < 2 and run.poll() is None:
        assert time.monotonic() < deadline, "no clip finished"
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)  # the workers with it, as a job scheduler would
    run.wait()
    gone = time.monotonic() + 10  # a rename in flight still completes: wait for the workers
    while time.monotonic() < gone:
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    done = finished(out)
    assert 2 <= len(done) < 20, f"the kill came too late to test anything ({len(done)} done)"

    # The rest in this process, and the single runs, on a worker's share of the threads: a
    # video's masks are those of `track` with as many threads (docs/usage.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        check_the_rerun(capsys, tmp_path, manifest, out, done)
    finally:
        torch.set_num_threads(threads)


def check_the_rerun(capsys: pytest.CaptureFixture[str], tmp_path: Path, manifest: Path,
                    out: Path, done: dict[str, int]) -> None:
    code, _ = cli(capsys, "track-many", manifest, "--out", out, "--method", "pixels",
                  "--json", tmp_path / "summary.json")
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {v["name"]: v["status"] for v in summary["videos"]}
    assert {n for n, s in status.items() if s == "done before"} == set(done)
    assert {n for n, s in status.items() if s == "tracked"} == set(status) - set(done)
    assert {name: t for name, t in finished(out).items() if name in done} == done  # not again
    assert sorted(p.name for p in out.iterdir()) == sorted(status)  # nothing half-written left
    assert_same_as_track(capsys, tmp_path, out, manifest.parent, sorted(status),
                         "--method", "pixels")


def test_torchrun_ranks_share_the_manifest_and_match_one_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "clips", 5, 4)
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(capsys, "track-many", manifest, "--out", one, "--method", "identity")[0] == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "-m", "colortrack", "-q", "track-many", manifest, "--out", two, "--method",
                    "identity", "--json", tmp_path / "rank-{share}.json"],
                   check=True, env=env, capture_output=True)
    tracked = [[v["name"] for v in json.loads((tmp_path / f"rank-{r}.json").read_text())["videos"]
                if v["status"] == "tracked"] for r in (0, 1)]
    assert tracked == [["clip00", "clip02", "clip04"], ["clip01", "clip03"]]  # each once
    for name in sorted(tracked[0] + tracked[1]):
        assert masks_of(one / name).keys() == masks_of(two / name).keys()
        for frame, ids in masks_of(one / name).items():
            np.testing.assert_array_equal(masks_of(two / name)[frame], ids)


def test_default_method_matches_track_and_a_failed_video_does_not_stop_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "clips", 2, 3)
    small = np.zeros((20, 20), dtype=np.uint8)
    small[5:10, 5:10] = 1
    write_mask(tmp_path / "clips" / "small.png", small)
    with manifest.open("a") as file:  # a mask of the wrong size, and its own settings
        file.write(json.dumps({"video": "clip01.mp4", "annotation": "small.png",
                               "name": "bad"}) + "\n")
        file.write(json.dumps({"video": "clip01.mp4", "annotation": "first.png",
                               "name": "own", "set": {"topk": 3}}) + "\n")
    out = tmp_path / "out"
    code, err = cli(capsys, "track-many", manifest, "--out", out, "--json", tmp_path / "s.json")
    assert code == 1, err  # one failed
    videos = json.loads((tmp_path / "s.json").read_text())["videos"]
    assert [v["status"] for v in videos] == ["tracked", "tracked", "failed", "tracked"]
    assert "small.png: mask is 20x20 but the video frames are 64x48" in videos[2]["error"]
    assert not (out / "bad").exists()
    assert json.loads((out / "own" / "done.json").read_text())["settings"] == ["topk=3"]
    assert_same_as_track(capsys, tmp_path, out, manifest.parent, ["clip00", "clip01"])

    code, err = cli(capsys, "track-many", manifest, "--out", out, "--set", "topk=5")
    one_line(err, "clip00: tracked with other settings", "--overwrite")


def test_shards_split_the_manifest_by_its_order(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "clips", 5, 2)
    out = tmp_path / "out"
    for shard in ("1/2", "0/2"):
        assert cli(capsys, "track-many", manifest, "--out", out, "--method", "identity",
                   "--shard", shard, "--json", tmp_path / "s{share}.json")[0] == 0
    names = [[v["name"] for v in json.loads((tmp_path / f"s{i}.json").read_text())["videos"]]
             for i in (0, 1)]
    assert names == [["clip00", "clip02", "clip04"], ["clip01", "clip03"]]
    assert len(list(out.glob("*/done.json"))) == 5
    code, err = cli(capsys, "track-many", manifest, "--out", out, "--shard", "2/2")
    one_line(err, "bad shard '2/2'")
    code, err = cli(capsys, "track-many", manifest, "--out", out, "--shard", "0/2",
                    "--json", tmp_path / "one.json")
    one_line(err, "2 shares would write this one file", "{share}")


def test_share_and_device_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_share(parse_shard("2/3")) == (5, 6)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert process_share(parse_shard("0/1")) == (0, 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert [rank_device(d) for d in ("cuda", "cuda:0", "cpu")] == ["cuda:3", "cuda:0", "cpu"]


def test_coco_formats_without_pycocotools_are_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_clips(tmp_path / "clips", 1, 2)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as where it is not installed
    for command in (["track-many", manifest], ["track", manifest.parent / "clip00.mp4",
                                                "--mask", manifest.parent / "first.png"]):
        code, err = cli(capsys, *command, "--out", tmp_path / "out", "--format", "coco")
        one_line(err, "need pycocotools: pip install 'colortrack[coco]'")
        assert not (tmp_path / "out").exists()
