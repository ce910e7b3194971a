"""Manifests (JSON Lines, CSV): every bad one is refused before any work, with its line named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import cli, moving_texture, one_line
from tests.test_batch import make_clips


def lines(*rows: dict[str, object]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


GOOD = {"video": "D/clip00.mp4", "annotation": "D/first.png"}


@pytest.mark.parametrize(("text", "fragments"), [
    (lines(GOOD, {"video": "D/nope.mp4", "annotation": "D/first.png"}),
     ["videos.jsonl:2: ", "nope.mp4: not found"]),
    (lines(GOOD, {**GOOD, "name": "b", "anotation": "D/first.png"}),
     ["videos.jsonl:2: unknown key 'anotation'"]),
    (lines(GOOD, {"video": "D/clip01.mp4", "annotation": "D/first.png", "name": "clip00"}),
     ["videos.jsonl:2: the name 'clip00' is line 1's too"]),
    (lines({"video": "D/clip00.mp4"}), ["videos.jsonl:1: 'annotation' is required"]),
    (lines(GOOD, {**GOOD, "name": "../up"}), ["videos.jsonl:2: name '../up' must be a folder"]),
    (lines(GOOD, {**GOOD, "name": "b", "set": {"topk": "many"}}),
     ["videos.jsonl:2: bad value for topk: 'many'"]),
    (lines(GOOD, {**GOOD, "name": "b", "set": {"nope": 1}}),
     ["videos.jsonl:2: unknown setting 'nope=1'"]),
    (lines(GOOD) + "{not json\n", ["videos.jsonl:2: not JSON"]),
    (lines(GOOD, {"video": "D/frames", "annotation": "D/first.png", "name": "clip00.mp4"}),
     ["videos.jsonl:2: the output", "clip00.mp4 is an input"]),
    (lines({**GOOD, "annotation": "D/held/00000.png"}, {**GOOD, "name": "held"}),
     ["videos.jsonl:2: the output", "held holds the input", "00000.png"]),
])
def test_bad_manifests_are_refused_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
        fragments: list[str]) -> None:
    data = tmp_path / "data"  # also the output folder, where an input may be in the way
    make_clips(data, 2, 2)
    (data / "frames").mkdir()
    (data / "held").mkdir()
    shutil.copy(data / "first.png", data / "held" / "00000.png")
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text(text.replace('"D/', f'"{data}/'))
    before = sorted(data.rglob("*"))
    code, err = cli(capsys, "track-many", manifest, "--out", data, "--method", "identity")
    assert code in (1, 2)
    one_line(err, *fragments)
    assert sorted(data.rglob("*")) == before  # refused before any work


def test_an_output_inside_an_input_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path, 1, 2)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(moving_texture(2, 64, 48)):
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
    manifest.write_text(lines({"video": "clip00.mp4", "annotation": "first.png"},
                              {"video": "frames", "annotation": "first.png"}))
    code, err = cli(capsys, "track-many", manifest, "--out", frames / "results")
    one_line(err, "videos.jsonl:1: the output", "lies inside the input")
    assert not (frames / "results").exists()


def test_a_csv_manifest_with_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_clips(tmp_path, 2, 2)
    manifest = tmp_path / "videos.csv"
    manifest.write_text("video,annotation,name,set\nclip00.mp4,first.png,,\n"
                        "clip01.mp4,first.png,second,topk=3 context=2\n")
    assert cli(capsys, "track-many", manifest, "--out", tmp_path / "out")[0] == 0
    done = json.loads((tmp_path / "out" / "second" / "done.json").read_text())
    assert done["settings"] == ["topk=3", "context=2"] and done["frames"] == 2
    assert (tmp_path / "out" / "clip00" / "done.json").is_file()
    manifest.write_text("video,annotation,vid\nclip00.mp4,first.png,x\n")
    code, err = cli(capsys, "track-many", manifest, "--out", tmp_path / "out2")
    one_line(err, "videos.csv:1: unknown column 'vid'")
