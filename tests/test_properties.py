"""The command-line contract, checked on generated hostile files, names and settings.

Whatever the input, every command: exits 0, 1, 2, 130 or 143; prints nothing on stderr when it
succeeds and exactly one line when it does not, never a traceback; leaves its output folder
either as it was or complete; and leaves every input byte for byte as it was, with nothing
half-written anywhere. Each example runs in a fresh folder, in-process, on tiny fixtures, so
the whole suite stays within about a minute on two cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from colortrack.cli import main
from colortrack.data.annotations import write_mask
from colortrack.data.video import VideoReader
from colortrack.model.checkpoint import default_model_path
from tests.conftest import color_patches, moving_texture, recorded, write_video

H, W, FRAMES = 48, 64, 5
EXAMPLES = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
CODES = {0, 1, 2, 130, 143}


# --- Fixtures built once: the valid files that hostile ones are made from ---

@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("assets")
    write_video(folder / "clip.mp4", moving_texture(FRAMES, W, H), 10)
    write_video(folder / "long.mp4", color_patches(0, (3, 1), frames=24), 12)
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 20:40] = 1
    ids[35:45, 5:15] = 2
    write_mask(folder / "mask.png", ids)
    points = {"format": "colortrack-keypoints/1", "names": ["a", "b"], "skeleton": [[0, 1]],
              "frames": [{"frame": 0, "points": [[20, 20, 1], [40, 30, 1]]}]}
    (folder / "points.json").write_text(json.dumps(points))
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (links not followed): file hashes, 'dir' or the link target."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="colortrack-property-") as tmp:
        yield Path(tmp)


def run(argv: list[object]) -> tuple[int, str, str]:
    """The command in-process: exit code, stdout, stderr; numeric warnings count as output."""
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          warnings.catch_warnings(record=True) as caught):
        warnings.simplefilter("always", RuntimeWarning)
        code = main(["-q", *map(str, argv)])
    event(f"{argv[0]} exit {code}")  # shown by --hypothesis-show-statistics
    stray = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return code, out.getvalue(), err.getvalue() + "".join(f"warning: {s}\n" for s in stray)


def assert_contract(code: int, err: str, workdir: Path, before: dict[str, str],
                    out: Path | None = None, complete=None) -> None:
    """Exit code and one line; inputs (in/) untouched; a failure changes nothing at all, a
    success leaves `out` complete; nothing hidden (half-written) anywhere."""
    assert code in CODES, (code, err)
    assert "Traceback" not in err, err
    if code == 0:
        assert err == "", err
    else:
        assert err.count("\n") == 1 and err.startswith("colortrack: "), err
    after = snapshot(workdir)
    changed = [k for k, v in before.items() if k.startswith("in") and after.get(k) != v]
    assert not changed, f"inputs changed: {changed}"
    if code != 0:
        assert after == before, "a failed run changed an output"
    elif complete is not None:
        complete(out)
    asked = str(out.relative_to(workdir)) if out and out.is_relative_to(workdir) else None
    half_written = [k for k in after if Path(k).name.startswith(".") and k not in before
                    and not (asked and (k == asked or k.startswith(asked + os.sep)
                                        or asked.startswith(k + os.sep)))]  # --out's own path
    assert not half_written, half_written


# --- Hostile material ---

# File names: control characters, protocol-like prefixes, percent signs, spaces, non-ASCII and
# bytes that are not UTF-8 (as Linux allows); never '/' or NUL, which no name can hold.
NAMES = st.one_of(
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
            min_size=1, max_size=24),
    st.sampled_from(["pipe:0", "concat:x", "-x", "%d", "a\nb", " ", "..x", "\u202ename",
                     os.fsdecode(b"\xff\xfe")]),
).filter(lambda n: n not in (".", "..") and len(os.fsencode(n)) <= 200)


@st.composite
def hostile_video(draw: st.DrawFn, assets: Path, folder: Path) -> Path:
    """A video file or frame folder: valid, cut, random bytes, odd images, or not there."""
    name = draw(NAMES)
    path = folder / (name + draw(st.sampled_from([".mp4", "", ".avi"])))
    kind = draw(st.sampled_from(["valid", "valid", "valid", "cut", "bytes", "frames",
                                 "empty folder", "missing", "mask as video"]))
    data = (assets / "clip.mp4").read_bytes()
    if kind == "valid":
        path.write_bytes(data)
    elif kind == "cut":
        path.write_bytes(data[: draw(st.integers(0, len(data) - 1))])
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif kind == "frames":
        path.mkdir()
        for i in range(draw(st.integers(1, 3))):
            size = draw(st.sampled_from([(H, W), (1, 1), (H, W), (9, 7)]))
            array = np.full((*size, 3), draw(st.integers(0, 255)), np.uint8)
            Image.fromarray(array).save(path / f"{i}{draw(st.sampled_from(['.png', '.jpg']))}")
    elif kind == "empty folder":
        path.mkdir()
    elif kind == "mask as video":
        shutil.copy(assets / "mask.png", path)
    return path


@st.composite
def hostile_mask(draw: st.DrawFn, assets: Path, folder: Path) -> Path:
    """A mask file or folder: valid, JPEG, any mode and size, random bytes, or not there."""
    path = folder / (draw(NAMES) + ".png")
    kind = draw(st.sampled_from(["valid", "valid", "valid", "jpeg", "image", "bytes", "folder",
                                 "missing"]))
    if kind == "valid":
        shutil.copy(assets / "mask.png", path)
    elif kind == "jpeg":
        Image.open(assets / "mask.png").convert("L").save(path, format="JPEG")
    elif kind == "image":
        mode = draw(st.sampled_from(["1", "L", "P", "RGB", "RGBA", "I;16", "LA"]))
        size = draw(st.sampled_from([(W, H), (H, W), (1, 1)]))
        raw = len(Image.new(mode, size).tobytes())
        Image.frombytes(mode, size, draw(st.binary(min_size=raw, max_size=raw))).save(path)
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif kind == "folder":
        path.mkdir()
        shutil.copy(assets / "mask.png", path / draw(st.sampled_from(["00000.png", "1.png"])))
        (path / f"{draw(st.integers(0, 99999)):05d}.png").write_bytes(draw(st.binary(max_size=50)))
    return path


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12,
)
NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.just(1e308))


@st.composite
def hostile_points(draw: st.DrawFn, folder: Path) -> Path:
    """A keypoint file: near-valid with hostile numbers, random JSON, or random bytes."""
    path = folder / (draw(NAMES) + ".json")
    kind = draw(st.sampled_from(["numbers", "json", "bytes"]))
    if kind == "numbers":
        doc = {"format": "colortrack-keypoints/1", "names": ["a"],
               "frames": [{"frame": draw(st.one_of(st.integers(-5, 8), NUMBERS)),
                           "points": [[draw(NUMBERS), draw(NUMBERS), draw(st.sampled_from(
                               [0, 1, 1.0, True, 2]))]]}]}
        path.write_text(json.dumps(doc))
    elif kind == "json":
        path.write_text(json.dumps(draw(JSON_VALUES)))
    else:
        path.write_bytes(draw(st.binary(max_size=100)))
    return path


PROPAGATION_KEYS = ["context", "topk", "radius", "temperature", "color_temperature",
                    "global_first", "normalize", "precision", "nope"]
SETTING_VALUES = st.one_of(st.integers(-10, 10**12).map(str), NUMBERS.map(str),
                           st.sampled_from(["nan", "inf", "-inf", "", "true", "x", "1e-300"]))


def settings_of(keys: list[str]) -> st.SearchStrategy[list[str]]:
    pairs = st.tuples(st.sampled_from(keys), SETTING_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.lists(pairs, max_size=2).map(lambda s: [a for p in s for a in ("--set", p)])


@st.composite
def hostile_out(draw: st.DrawFn, ins: Path, outs: Path, inputs: list[Path]) -> Path:
    """Where results go: a fresh name, a folder of earlier results, a file, or an input."""
    kind = draw(st.sampled_from(["fresh", "fresh", "fresh", "earlier", "earlier", "file",
                                 "input", "inputs folder", "inside inputs", "link to inputs",
                                 "nested"]))
    path = outs / draw(NAMES)
    if kind == "earlier":
        path.mkdir()
        for name in draw(st.lists(st.sampled_from(["00000.png", "00007.png", "overlay.mp4",
                                                   "points.json", "notes.txt"]), max_size=3)):
            (path / name).write_bytes(draw(st.binary(max_size=20)))
        if draw(st.booleans()):
            (path / "00001.png").mkdir()  # a folder where an output goes
    elif kind == "file":
        path.write_bytes(b"mine")
    elif kind == "input":
        return draw(st.sampled_from(inputs))
    elif kind == "inputs folder":
        return ins
    elif kind == "inside inputs":
        return ins / draw(NAMES)
    elif kind == "link to inputs":
        path.symlink_to(ins)
    elif kind == "nested":
        return path / draw(NAMES) / "out"
    return path


# --- Completeness of what succeeded ---

def frames_in(video: Path) -> int:
    with VideoReader(video) as reader:
        return sum(1 for _ in reader)


def complete_masks(out: Path) -> None:
    masks = sorted(p.name for p in out.glob("[0-9]*.png"))
    assert masks == [f"{i:05d}.png" for i in range(len(masks))] and masks
    assert frames_in(out / "overlay.mp4") == len(masks)


def complete_points(out: Path) -> None:
    track = json.loads((out / "points.json").read_text())
    assert (out / "points.csv").is_file() and track["frames"]
    assert frames_in(out / "overlay.mp4") == len(track["frames"])


def folders(workdir: Path) -> tuple[Path, Path]:
    ins, outs = workdir / "in", workdir / "out"
    ins.mkdir()
    outs.mkdir()
    return ins, outs


# --- The properties ---

@EXAMPLES
@given(data=st.data())
def test_track_masks(assets, data) -> None:
    with workspace() as workdir:
        ins, outs = folders(workdir)
        video = data.draw(hostile_video(assets, ins))
        mask = data.draw(hostile_mask(assets, ins))
        out = data.draw(hostile_out(ins, outs, [video, mask]))
        options = data.draw(settings_of(PROPAGATION_KEYS))
        method = data.draw(st.sampled_from(["identity", "flow", "pixels"]))
        overwrite = data.draw(st.sampled_from([[], ["--overwrite"]]))
        before = snapshot(workdir)
        code, _, err = run(["track", video, "--mask", mask, "--out", out, "--method", method,
                            *(options if method == "pixels" else []), *overwrite])
        assert_contract(code, err, workdir, before, out, complete_masks)


@EXAMPLES
@given(data=st.data())
def test_track_points(assets, data) -> None:
    with workspace() as workdir:
        ins, outs = folders(workdir)
        video = data.draw(hostile_video(assets, ins))
        points = data.draw(hostile_points(ins))
        out = data.draw(hostile_out(ins, outs, [video, points]))
        before = snapshot(workdir)
        code, _, err = run(["track", video, "--points", points, "--out", out,
                            "--method", "identity", "--overwrite"])
        assert_contract(code, err, workdir, before, out, complete_points)


def _davis(root: Path, draw: st.DrawFn, assets: Path) -> None:
    """A one-sequence DAVIS layout whose frames or masks may be damaged."""
    images, annotations = root / "JPEGImages/480p/seq", root / "Annotations/480p/seq"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t, frame in enumerate(moving_texture(3, W, H)):
        Image.fromarray(frame).save(images / f"{t:05d}.jpg")
        shutil.copy(assets / "mask.png", annotations / f"{t:05d}.png")
    damage = draw(st.sampled_from(["none", "none", "frame", "mask", "list"]))
    if damage == "frame":
        (images / "00001.jpg").write_bytes(draw(st.binary(max_size=40)))
    elif damage == "mask":
        (annotations / "00000.png").write_bytes(draw(st.binary(max_size=40)))
    elif damage == "list":
        (root / "ImageSets/2017").mkdir(parents=True)
        (root / "ImageSets/2017/val.txt").write_bytes(draw(st.binary(max_size=20)))


@settings(EXAMPLES, max_examples=30)
@given(data=st.data())
def test_bench_and_eval_davis(assets, data) -> None:
    with workspace() as workdir:
        ins, outs = folders(workdir)
        _davis(ins / "davis", data.draw, assets)
        out = data.draw(hostile_out(ins, outs, [ins / "davis"]))
        scores = data.draw(st.sampled_from([outs / "scores.json", ins / "davis" / "s.json",
                                            out, ins / "davis/Annotations/480p/seq/00000.png"]))
        command = data.draw(st.sampled_from(["bench", "eval"]))
        before = snapshot(workdir)
        if command == "bench":
            overwrite = data.draw(st.sampled_from([[], ["--overwrite"]]))
            argv = ["bench", "davis", "--root", ins / "davis", "--out", out, "--method",
                    "identity", "--json", scores, *overwrite]
        else:
            argv = ["eval", "davis", "--root", ins / "davis", "--predictions", ins / "davis",
                    "--json", scores]
            out = None

        def complete(folder: Path) -> None:
            assert sorted(p.name for p in (folder / "seq").iterdir()) == [
                f"{t:05d}.png" for t in range(3)]

        code, _, err = run(argv)
        assert_contract(code, err, workdir, before, out, complete if out else None)


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
@settings(EXAMPLES, max_examples=25)
@given(data=st.data())
def test_model_files_and_the_commands_that_load_them(assets, data) -> None:
    """info, embed and colorize on tampered model files: values, dtypes, metadata."""
    with workspace() as workdir:
        ins, outs = folders(workdir)
        model = ins / (data.draw(NAMES) + ".safetensors")
        tensors = load_file(str(default_model_path()))
        name = data.draw(st.sampled_from(sorted(tensors)))
        change = data.draw(st.sampled_from(["value", "dtype", "drop", "none"]))
        if change == "value":
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[0] = data.draw(
                st.floats(width=32) if tensors[name].is_floating_point()
                else st.integers(-2**62, 2**62))
        elif change == "dtype":
            tensors[name] = tensors[name].to(data.draw(st.sampled_from(
                [torch.float16, torch.int32, torch.int64, torch.bool, torch.float64])))
        elif change == "drop":
            del tensors[name]
        with safe_open(str(default_model_path()), framework="pt") as handle:
            metadata = dict(handle.metadata())
        if data.draw(st.booleans()):
            key = data.draw(st.sampled_from(["model_config", "info", "format"]))
            metadata[key] = json.dumps(data.draw(JSON_VALUES))
        save_file(tensors, str(model), metadata=metadata)
        shutil.copy(assets / "clip.mp4", ins / "clip.mp4")
        out = outs / "e.mp4"
        argv = data.draw(st.sampled_from([
            ["info", "--model", model],
            ["embed", ins / "clip.mp4", "--out", out, "--model", model],
            ["colorize", ins / "clip.mp4", "--reference", ins / "clip.mp4", "--out", out,
             "--model", model],
        ]))
        before = snapshot(workdir)
        code, _, err = run(argv)
        assert_contract(code, err, workdir, before)
        assert code != 0 or argv[0] == "info" or frames_in(out) == FRAMES


TRAIN_KEYS = ["size", "refs", "fps", "max_gap", "batch", "lr", "temperature", "radius",
              "cache_short_side", "workers", "kmeans_pixels", "scale", "init", "nope"]


@settings(EXAMPLES, max_examples=15)
@given(data=st.data())
def test_train(assets, data) -> None:
    """Hostile settings and run folders; the few that are valid train 1 step on a tiny clip."""
    with workspace() as workdir:
        ins, outs = folders(workdir)
        shutil.copy(assets / "long.mp4", ins / "v.mp4")
        out = data.draw(hostile_out(ins, outs, [ins / "v.mp4"]))
        run_files = data.draw(st.lists(st.sampled_from(["latest", "metrics.csv", "ckpt-00000001",
                                                        "previews"]), max_size=2))
        if not os.path.lexists(out) and run_files and out.parent == outs:
            out.mkdir()
            for name in run_files:
                (out / name).write_bytes(data.draw(st.binary(max_size=20)))
        flags = data.draw(st.sampled_from([[], ["--resume"], ["--overwrite"]]))
        fast = ["--set", "size=64", "--set", "batch=2", "--set", "workers=0",
                "--set", "kmeans_pixels=64", "--set", "val_clips=1", "--set", "demo_frames=0"]
        argv = ["train", ins / "v.mp4", "--out", out, "--steps", "1", *fast,
                *data.draw(settings_of(TRAIN_KEYS)), *flags]
        before = snapshot(workdir)

        def complete(folder: Path) -> None:
            assert (folder / "latest").read_text() == "ckpt-00000001"
            assert (folder / "ckpt-00000001" / "state.json").is_file()

        code, _, err = run(argv)
        assert_contract(code, err, workdir, before, out, complete)


@settings(EXAMPLES, max_examples=3)
@given(delay=st.floats(0.0, 0.6), stop=st.sampled_from([signal.SIGINT, signal.SIGTERM]))
def test_a_stop_at_any_moment(assets, delay, stop) -> None:
    """Ctrl-C or SIGTERM at a random moment of a real process: 0, 130 or 143, and the earlier
    results stay whole until the new ones are."""
    with workspace() as workdir:
        ins, outs = folders(workdir)
        video = write_video(ins / "long.mp4", moving_texture(120, 128, 96), 25)
        write_mask(ins / "m.png", np.pad(np.ones((30, 30), np.uint8), ((20, 46), (20, 78))))
        out = outs / "o"
        out.mkdir()
        (out / "00000.png").write_bytes(b"earlier")
        recorded(out, "00000.png")
        before = snapshot(workdir)
        process = subprocess.Popen(
            [sys.executable, "-m", "colortrack", "-q", "track", str(video), "--mask",
             str(ins / "m.png"), "--out", str(out), "--method", "flow", "--overwrite"],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120  # generous: the machine may be busy
        while not list(outs.glob(".o.colortrack-*.tmp")):  # running, past the start-up imports
            assert process.poll() is None and time.monotonic() < deadline, "it did not start"
            time.sleep(0.01)
        time.sleep(delay)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
        # A stop that lands after the results are in place ends the process by the signal
        # itself; a shell reports that as 128 + the signal's number, as it does 130 and 143.
        code = 128 - process.returncode if process.returncode < 0 else process.returncode
        assert code in (0, 130, 143), err
        assert err in ("", "colortrack: interrupted\n"), err
        if snapshot(workdir) == before:
            assert code != 0
        else:  # stopped too late to stop anything: the new results are complete
            complete_masks(out)
            assert_contract(0, "", workdir, before, out, complete_masks)
