"""Bad input, interruptions and safe loading: one line on stderr, the right exit code, no
traceback, nothing half-written, no input touched, and models loaded without trusting them.

Tests run as root, which ignores permissions, so an unwritable output is made with a path under
a regular file or under /proc instead of `chmod 555`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from colortrack.cli import main
from colortrack.data.annotations import DAVIS_PALETTE, read_mask, write_mask
from colortrack.data.outputs import MANIFEST
from colortrack.errors import ColortrackError
from colortrack.model.checkpoint import default_model_path, load_model
from tests.conftest import cli, moving_texture, one_line, recorded, tmpfs, write_video

H, W = 48, 64


def leftovers(folder: Path) -> list[Path]:
    """Hidden files or folders (unfinished atomic writes, staging folders) under `folder`; the
    manifest of what a run wrote is meant to stay."""
    return [p for p in folder.rglob(".*") if p.name != MANIFEST]


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def track(video: object, *options: object) -> list[object]:
    return ["track", video, *options, "--method", "identity"]


# Each case: (name, make(tmp, video, mask) -> argv, fragment of the message, exit code).
def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _cut(video: Path, out: Path) -> Path:
    out.write_bytes(video.read_bytes()[:900])
    return out


def _mixed_folder(tmp: Path) -> Path:
    folder = tmp / "frames"
    folder.mkdir()
    frames = moving_texture(2, W, H)
    Image.fromarray(frames[0]).save(folder / "0.png")
    Image.fromarray(frames[1][:20]).save(folder / "1.png")
    return folder


def _mask(name: str, array: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        Image.fromarray(array).save(tmp / name)
        return tmp / name

    return make


def _points(name: str, text: str) -> Callable[[Path], Path]:
    return _bytes(name, text.encode())


def _keypoints(x: float, frame: int = 0) -> str:
    doc = {"format": "colortrack-keypoints/1", "names": ["a"],
           "frames": [{"frame": frame, "points": [[x, 5, 1]]}]}  # fmt: skip
    return json.dumps(doc)


_rgb = np.zeros((H, W, 3), dtype=np.uint8)
_rgb[10:30, 10:30] = (12, 34, 56)
_half = np.zeros((H, W), dtype=np.uint8)
_half[:, :10] = 1

VIDEO_CASES = [
    ("missing video", lambda t: t / "none.mp4", "none.mp4: no such file"),
    ("empty file", _bytes("empty.mp4", b""), "empty.mp4: not a readable video"),
    ("not a video", _bytes("text.mp4", b"hello\n" * 99), "text.mp4: not a readable video"),
    ("truncated video", lambda t: _cut(t / "clip.mp4", t / "cut.mp4"), "cut.mp4: "),
    ("folder without frames", lambda t: (t / "none").mkdir() or t / "none", "holds no .jpg/.png"),
    ("frames of two sizes", _mixed_folder, "1.png: frame size 64x20 differs from 64x48"),
]
MASK_CASES = [
    ("missing mask", lambda t: t / "none.png", "none.png: mask file not found"),
    ("mask of another size", _mask("small.png", _half[:20, :20]), "small.png: mask is 20x20 but"),
    ("unreadable mask", _bytes("bad.png", b"\x89PNG\r\n\x1a\n" + b"x" * 9), "bad.png: cannot"),
    ("mask is a video", lambda t: t / "clip.mp4", "clip.mp4: cannot read mask image"),
    ("mask without object", _mask("empty.png", _half * 0), "empty.png: the first mask is empty"),
    ("colors not in the palette", _mask("rgb.png", _rgb), "rgb.png: color (12, 34, 56) is not in"),
]
POINT_CASES = [
    ("malformed keypoints", _points("bad.json", "{oops"), "bad.json: not valid JSON"),
    ("wrong keypoint format", _points("f.json", '{"format": 1}'), 'f.json: "format" must be'),
    ("point outside the image", _points("o.json", _keypoints(500)), "o.json: visible point 'a'"),
    ("frame past the end", _points("e.json", _keypoints(5, 50)), "e.json: annotates frame 50"),
]


@pytest.mark.parametrize(("case", "make", "message"), VIDEO_CASES, ids=[c[0] for c in VIDEO_CASES])
def test_bad_video(capsys, clip, tmp_path, case, make, message) -> None:
    code, err = cli(capsys, *track(make(tmp_path), "--mask", clip[1], "--out", tmp_path / "out"))
    assert code == 1
    one_line(err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("case", "make", "message"), MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_bad_mask(capsys, clip, tmp_path, case, make, message) -> None:
    code, err = cli(capsys, *track(clip[0], "--mask", make(tmp_path), "--out", tmp_path / "out"))
    assert code == 1
    one_line(err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("case", "make", "message"), POINT_CASES, ids=[c[0] for c in POINT_CASES])
def test_bad_points(capsys, clip, tmp_path, case, make, message) -> None:
    code, err = cli(capsys, *track(clip[0], "--points", make(tmp_path), "--out", tmp_path / "o"))
    assert code == 1
    one_line(err, message)
    assert not (tmp_path / "o").exists()


def test_damaged_video_mid_stream_leaves_no_partial_output(capsys, tmp_path, clip) -> None:
    """Frames 0..k decode and are written, then frame k+1 fails: the outputs must all go."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(24)]
    data = bytearray(write_video(tmp_path / "noise.mp4", frames, 24).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = rng.bytes(4000)
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    argv = track(tmp_path / "damaged.mp4", "--mask", clip[1], "--out", tmp_path / "new" / "o")
    code, err = cli(capsys, *argv)
    assert code == 1
    one_line(err, "damaged.mp4: decode error at frame")
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)  # nor the parent it made


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (lambda t: t / "clip.mp4" / "out", "cannot use as output folder (Not a directory)"),
        (lambda t: _bytes("notes.txt", b"x")(t), "notes.txt: exists and is not a folder"),
        (lambda t: Path("/proc/colortrack-out"), "/proc/colortrack-out: cannot use as output"),
    ],
    ids=["under a file", "is a file", "under /proc"],
)
def test_unwritable_output(capsys, clip, tmp_path, out, message) -> None:
    code, err = cli(capsys, *track(clip[0], "--mask", clip[1], "--out", out(tmp_path)))
    assert code == 1
    one_line(err, message)


def test_full_disk_names_the_file_and_leaves_nothing(capsys, clip, tmp_path, monkeypatch) -> None:
    """The third PNG hits ENOSPC: the message names the output file, not a temporary one."""
    save, calls = Image.Image.save, []

    def full(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        calls.append(fp)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full)
    code, err = cli(capsys, *track(clip[0], "--mask", clip[1], "--out", tmp_path / "out"))
    assert code == 1
    one_line(err, f"{tmp_path / 'out' / '00002.png'}: cannot write (No space left on device)")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_full_disk_on_a_tiny_tmpfs(capsys, clip, tmp_path) -> None:
    """The real thing where the machine allows mounting (root with CAP_SYS_ADMIN)."""
    with tmpfs(tmp_path / "disk", "16k") as disk:
        frames = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
        video = write_video(tmp_path / "noise.mp4", list(frames), 10)
        write_mask(tmp_path / "m.png", np.pad(np.ones((20, 20), np.uint8), ((0, 76), (0, 108))))
        code, err = cli(capsys, *track(video, "--mask", tmp_path / "m.png", "--out", disk / "o"))
        assert code == 1
        one_line(err, str(disk / "o"), "No space left on device")
        assert list(disk.iterdir()) == []


def test_overwrite_replaces_earlier_results_whole_and_keeps_other_files(capsys, clip, tmp_path
                                                                          ) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "00099.png").write_bytes(b"an earlier, longer run")
    recorded(out, "00099.png")
    code, err = cli(capsys, *track(clip[0], "--mask", clip[1], "--out", out))
    assert code == 1
    one_line(err, "already holds tracking outputs (00099.png, ...)", "--overwrite")
    before = digest(*clip)
    assert cli(capsys, *track(clip[0], "--mask", clip[1], "--out", out, "--overwrite"))[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "00099.png").exists()
    assert len(list(out.glob("0000?.png"))) == 6 and digest(*clip) == before
    assert not leftovers(tmp_path)


def test_an_input_is_never_an_output(capsys, clip, tmp_path) -> None:
    mask = tmp_path / "00000.png"
    mask.write_bytes(clip[1].read_bytes())
    before = digest(clip[0], mask)
    code, err = cli(capsys, *track(clip[0], "--mask", mask, "--out", tmp_path, "--overwrite"))
    assert code == 1
    one_line(err, "is an input, inside the output folder")
    assert digest(clip[0], mask) == before


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """300 frames of 128x96, long enough to be stopped in the middle."""
    folder = tmp_path_factory.mktemp("long")
    video = write_video(folder / "long.mp4", moving_texture(300, 128, 96), 25)
    write_mask(folder / "m.png", np.pad(np.ones((30, 30), np.uint8), ((20, 46), (20, 78))))
    return video, folder / "m.png"


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopped_run_exits_cleanly_and_leaves_nothing(tmp_path, long_clip, stop, code) -> None:
    video, mask = long_clip
    before, out = digest(video, mask), tmp_path / "out"
    command = [sys.executable, "-m", "colortrack", "-q", "track", str(video), "--mask", str(mask),
               "--out", str(out), "--method", "flow"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".out.colortrack-*/00003.png")):  # well into the run
        assert process.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)
    process.send_signal(stop)
    _, err = process.communicate(timeout=30)
    assert process.returncode == code
    assert err == "colortrack: interrupted\n"
    assert not out.exists() and not leftovers(tmp_path) and not leftovers(video.parent)
    assert digest(video, mask) == before


def test_the_command_exits_with_its_code_and_its_output_flushed(tmp_path, clip) -> None:
    # The command skips the interpreter's teardown (cli.run): what it printed must still
    # arrive, and its code be the exit status, through pipes.
    video, mask = clip
    command = [sys.executable, "-m", "colortrack", "track", str(video), "--mask", str(mask),
               "--out", str(tmp_path / "out"), "--method", "identity"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("tracked ")
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already holds tracking outputs" in again.stderr


def test_other_commands(capsys, clip, tmp_path) -> None:
    video, mask = clip
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["eval", "davis", "--root", tmp_path / "no", "--predictions", tmp_path], "no: DAVIS root"),
        (["bench", "davis", "--root", empty, "--out", tmp_path / "o"], "annotation folder not"),
        (["bench", "badja", "--root", tmp_path / "no", "--davis-root", empty,
          "--out", tmp_path / "o", "--json", tmp_path / "j.json"], "no: BADJA folder"),  # fmt: skip
        (["train", tmp_path / "no", "--out", tmp_path / "run"], "no: no such file or folder"),
        (["train", video, "--out", tmp_path / "run"], "clip.mp4: too short for a training clip"),
        (["embed", tmp_path / "no.mp4", "--out", tmp_path / "e.mp4"], "no.mp4: no such file"),
        (["embed", video, "--out", tmp_path / "none" / "e.mp4"], "output folder does not exist"),
        (["embed", video, "--out", tmp_path], "is a folder; name the output file"),
        (["embed", video, "--out", video, "--overwrite"], "clip.mp4: is an input"),
        (["embed", video, "--out", mask], "first.png: already exists; pass --overwrite"),
        (["colorize", video, "--reference", tmp_path / "no.png", "--out", tmp_path / "c.mp4"],
         "no.png: reference image not found"),  # fmt: skip
        (["colorize", video, "--reference", video, "--out", tmp_path / "c.mp4"],
         "clip.mp4: cannot read reference image"),  # fmt: skip
        (["info", "--model", mask], "first.png: not a readable safetensors model"),
        (["track", video, "--mask", mask, "--out", tmp_path / "o", "--model", mask],
         "first.png: not a readable safetensors model"),  # fmt: skip
        (["demo", "--out", video / "demo"], "cannot use as output folder"),
    ]
    for argv, message in cases:
        code, err = cli(capsys, *argv)
        assert code == 1, (argv, err)
        one_line(err, message)
    assert not leftovers(tmp_path) and not (tmp_path / "o").exists()


def test_wrong_usage_exits_2(capsys, clip, tmp_path) -> None:
    video, mask = clip
    cases = [
        (["track", video, "--mask", mask, "--out", tmp_path / "o", "--method", "identity",
          "--model", mask], "only apply to method 'model'"),  # fmt: skip
        (["track", video, "--mask", mask, "--out", tmp_path / "o", "--set", "nope=1"], "nope=1"),
        *((["track", video, "--mask", mask, "--out", tmp_path / "o", "--set", setting], setting)
          for setting in ("topk=0", "context=-1", "temperature=0", "temperature=-1", "radius=nan",
                          "radius=-2")),
        (["train", video, "--out", tmp_path / "run", "--preset", "nope"], "unknown preset"),
        (["train", video, "--out", tmp_path / "run", "--batch", "0"], "batch and steps must"),
        (["train", video, "--out", tmp_path / "run", "--lr", "nan"], "lr > 0"),
        *((["train", video, "--out", tmp_path / "run", "--set", setting], setting)
          for setting in ("size=20", "refs=0", "max_gap=0", "temperature=0", "lr_final=-1",
                          "workers=-1", "kmeans_pixels=0", "log_every=0", "checkpoint_every=0")),
        (["train", video, "--out", tmp_path / "run", "--set", "scale=0.5,0.2"], "0 < min <= max"),
        (["train", video, "--out", tmp_path / "run", "--set", "holdout=nope"],
         "no training video named nope"),
        (["train", video, "--out", tmp_path / "run", "--set", f"holdout={Path(video).name}"],
         "nothing is left to train"),
        (["info", "--preset", "nope"], "unknown preset 'nope'"),
    ]
    for argv, message in cases:
        code, err = cli(capsys, *argv)
        assert code == 2, (argv, err)
        one_line(err, message)
    assert cli(capsys, "track", video, "--mask", mask)[0] == 2  # argparse: --out is required


def test_a_device_this_machine_lacks_is_a_usage_error(capsys, clip, tmp_path) -> None:
    import torch

    video, mask = clip
    devices = [("gpu", "unknown device 'gpu'"), ("mps", "not supported")]
    if not torch.cuda.is_available():
        devices.append(("cuda", "use --device cpu"))
    for device, message in devices:
        for argv in (["track", video, "--mask", mask, "--out", tmp_path / "o"],
                     ["train", video, "--out", tmp_path / "run", "--steps", "1"],
                     ["colorize", video, "--reference", mask, "--out", tmp_path / "c.mp4"],
                     ["embed", video, "--out", tmp_path / "e.mp4"]):
            code, err = cli(capsys, *argv, "--device", device)
            assert code == 2, (argv, err)
            one_line(err, message)
    assert sorted(tmp_path.iterdir()) == sorted([video, mask])


def test_debug_shows_the_traceback(clip, tmp_path) -> None:
    with pytest.raises(ColortrackError, match="no such file"):
        main(["--debug", "track", str(tmp_path / "no.mp4"), "--mask", str(clip[1]), "--out", "o"])


# --- Safe loading: a model file is data, never code, and is checked before it is trusted ---


def _retag(path: Path, out: Path, change: Callable[[dict], None]) -> Path:
    """Copy a safetensors file with its metadata changed (the tensors stay as they are)."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    change(header["__metadata__"])
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return out


def _config(**changes: object) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        meta["model_config"] = json.dumps(json.loads(meta["model_config"]) | changes)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_config(embed_dim="abc"), "damaged model config (bad embed_dim 'abc')"),
        (_config(embed_dim=10**9), "damaged model config (bad embed_dim 1000000000)"),
        (_config(stages=[[32, 1, 1]]), "damaged model config (bad stages"),
        (_config(head_dilations=[]), "damaged model config (bad head_dilations"),
        (_config(evil="__import__('os')"), "damaged model config (unknown ModelConfig keys"),
        (_config(embed_dim=32), "weights do not match the model config"),
        (lambda meta: meta.update(model_config="[1, 2]"), "model_config is not a JSON object"),
        (lambda meta: meta.update(model_config="{"), "damaged model config"),
        (lambda meta: meta.update(info="[]"), "info is not a JSON object"),
        (lambda meta: meta.update(format="pickle"), "not a colortrack model"),
    ],
)
def test_tampered_model_file_is_an_error(capsys, tmp_path, change, message) -> None:
    path = _retag(default_model_path(), tmp_path / "m.safetensors", change)
    with pytest.raises(ColortrackError, match="m.safetensors: "):
        load_model(path)
    code, err = cli(capsys, "info", "--model", path)
    assert code == 1
    one_line(err, message)


def test_damaged_model_file_is_an_error(capsys, clip, tmp_path) -> None:
    data = default_model_path().read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    code, err = cli(capsys, "track", clip[0], "--mask", clip[1], "--out", tmp_path / "o",
                    "--model", tmp_path / "cut.safetensors")  # fmt: skip
    assert code == 1
    one_line(err, "cut.safetensors: not a readable safetensors model")
    nan = bytearray(data)
    nan[-4:] = np.array([np.nan], dtype=np.float32).tobytes()  # last value of the last tensor
    (tmp_path / "nan.safetensors").write_bytes(bytes(nan))
    with pytest.raises(ColortrackError, match="hold NaN or inf"):
        load_model(tmp_path / "nan.safetensors")


# --- Mask parsing never fails with anything but a ColortrackError ---

FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
MODES = ["1", "L", "P", "RGB", "RGBA", "I", "I;16", "LA", "PA", "F", "CMYK", "YCbCr"]


def _read_or_refuse(path: Path, shape: tuple[int, int] | None = None) -> None:
    try:
        ids = read_mask(path)
    except ColortrackError as error:
        assert str(path) in str(error)
        return
    assert ids.dtype == np.uint8 and ids.ndim == 2
    assert shape is None or ids.shape == shape


@FAST
@given(data=st.binary(max_size=300), png=st.booleans())
def test_read_mask_on_random_bytes(tmp_path_factory, data, png) -> None:
    path = tmp_path_factory.getbasetemp() / "random.png"
    path.write_bytes((b"\x89PNG\r\n\x1a\n" if png else b"") + data)
    _read_or_refuse(path)


@st.composite
def mask_files(draw: st.DrawFn) -> tuple[bytes, tuple[int, int] | None]:
    """Small images of any mode (RGB often in palette colors), saved, maybe with a damaged byte."""
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    size = len(Image.new(mode, (width, height)).tobytes())
    image = Image.frombytes(mode, (width, height), draw(st.binary(min_size=size, max_size=size)))
    if mode == "RGB" and draw(st.booleans()):
        indices = np.frombuffer(draw(st.binary(min_size=width * height, max_size=width * height)),
                                dtype=np.uint8) % 4  # fmt: skip
        image = Image.fromarray(DAVIS_PALETTE[indices].reshape(height, width, 3))
    if mode == "P":
        image.putpalette(draw(st.binary(min_size=768, max_size=768)))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=draw(st.sampled_from(["PNG", "TIFF", "BMP", "GIF"])))
    except (OSError, KeyError, ValueError):
        assume(False)
    data = bytearray(buffer.getvalue())
    if draw(st.booleans()):  # damaged: any size may come back, or an error
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data), None
    return bytes(data), (height, width)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged TIFF tags
def test_a_mask_whose_header_claims_more_than_memory_holds_is_refused(tmp_path) -> None:
    # Found by the property test below: a 1x1 TIFF whose damaged size tags make Pillow fail to
    # allocate its image (MemoryError).
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes.fromhex(
        "49492a00080000000b00000104000200000001000000010104000100000001000000020103000400"
        "00009200000003010300010000000100000006010300010000000200000011010400010000009a00"
        "00001501030001000000040000001601040001000000010000001701040001000000040000001c01"
        "0300010000000100000052010300010000000200000000000000080008000800080000000000"))
    with pytest.raises(ColortrackError, match="cannot read mask image"):
        read_mask(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged TIFF tags
@FAST
@given(file=mask_files())
def test_read_mask_on_random_images(tmp_path_factory, file) -> None:
    path = tmp_path_factory.getbasetemp() / "image.png"
    path.write_bytes(file[0])
    _read_or_refuse(path, file[1])


@FAST
@given(ids=st.integers(1, 8).flatmap(lambda n: st.lists(st.integers(0, 255), min_size=n * n,
                                                        max_size=n * n)))  # fmt: skip
def test_palette_masks_round_trip(tmp_path_factory, ids) -> None:
    side = int(len(ids) ** 0.5)
    array = np.array(ids, dtype=np.uint8).reshape(side, side)
    path = tmp_path_factory.getbasetemp() / "round.png"
    write_mask(path, array)
    np.testing.assert_array_equal(read_mask(path), array)
