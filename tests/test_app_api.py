"""The app's JSON API on generated hostile requests: random JSON bodies and types, random bytes
and PNGs as masks. Every answer is JSON, none a 500, and the session stays usable; plus the
defects found by hand, one test each."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from colortrack.app.session import MAX_OBJECTS, MAX_POINTS
from colortrack.track.baselines import IdentityPropagator
from tests.app_server import served
from tests.conftest import moving_texture, write_video

W, H = 64, 48
EXAMPLES = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
           | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=12)
KEYS = {"/api/open": ["path"], "/api/grabcut": ["frame", "box", "object"],
        "/api/points": ["points"], "/api/track": ["mode"], "/api/export": ["folder", "overwrite"]}
BODIES = st.sampled_from(sorted(KEYS)).flatmap(lambda path: st.tuples(
    st.just(path), JSON | st.fixed_dictionaries({}, optional={k: JSON for k in KEYS[path]})))


def first_mask() -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 20:40] = 1
    return ids


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    write_video(base / "clip.mp4", moving_texture(6, W, H), 10)
    with served(base) as app:
        app.session.open("clip.mp4")
        yield app


def wait(app) -> None:
    while app.session.state()["progress"]["running"]:
        time.sleep(0.01)


def intact(app) -> None:
    """The session still answers and still holds the clip, whole."""
    wait(app)
    state = app.state()
    assert state["video"].endswith("clip.mp4") and state["frames"] == 6
    assert app.call("GET", "/api/frame/5")[0] == 200
    for ids in app.session.masks.values():
        assert ids.shape == (H, W) and ids.dtype == np.uint8


@EXAMPLES
@given(request=BODIES)
def test_no_json_body_breaks_the_api(app, request):
    path, body = request
    status, answer = app.call("POST", path, body)
    assert status != 500 and isinstance(answer, dict), (status, answer)
    assert status in (200, 202) or (400 <= status < 500 and answer["error"]), answer
    intact(app)


def png(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="PNG")
    return out.getvalue()


PNGS = st.builds(
    lambda w, h, mode, seed, top: png(
        np.random.default_rng(seed).integers(0, top + 1, (h, w), dtype=np.uint8), mode),
    st.sampled_from([W, 1, 63, 2000]), st.sampled_from([H, 1, 47]),
    st.sampled_from(["L", "P", "RGB", "RGBA", "1", "I;16", "LA"]), st.integers(0, 2**16),
    st.sampled_from([1, MAX_OBJECTS, 255]))


@settings(EXAMPLES, max_examples=40)
@given(data=PNGS | st.binary(max_size=200), frame=st.sampled_from([0, 3, 5, 6, 99]))
def test_no_mask_upload_breaks_the_api(app, data, frame):
    status, answer = app.call("PUT", f"/api/mask/{frame}", data)
    assert status != 500 and isinstance(answer, dict), (status, answer)
    assert status == 200 or (400 <= status < 500 and answer["error"]), answer
    intact(app)


def test_what_once_gave_a_500_is_a_message(app):
    """Each request here once returned an HTML 'INTERNAL SERVER ERROR'."""
    app.session.set_mask(0, first_mask())
    cases = [
        ("/api/grabcut", {"frame": 0, "box": [0, 0, W, H], "object": 1}, "leaving some"),
        ("/api/grabcut", {"frame": 0, "box": [5, 5, 5, 5], "object": 1}, "at least 4x4"),
        ("/api/grabcut", {"frame": "0", "box": [1, 1, 9, 9]}, "frame must be a whole number"),
        ("/api/grabcut", {"frame": 0, "box": [1, 1, 9, float("nan")]}, "finite"),
        ("/api/grabcut", {"frame": 0, "box": "1,1,9,9"}, "box must be"),
        ("/api/grabcut", {"frame": 0, "box": [1, 1, 9, 9], "object": 999}, "object ids"),
        ("/api/points", {"points": [[1, float("inf")]]}, "finite"),
        ("/api/points", {"points": [["a", 1]]}, "finite"),
        ("/api/points", {"points": {"x": 1}}, "list"),
        ("/api/points", {"points": [[1, 1]] * (MAX_POINTS + 1)}, f"at most {MAX_POINTS}"),
        ("/api/open", {"path": ""}, "type a path"),
        ("/api/open", {"path": ["clip.mp4"]}, "path must be text"),
        ("/api/open", {"path": "a\0b"}, "not a usable path"),
        ("/api/export", {"folder": "out", "overwrite": "yes"}, "true or false"),
    ]
    for path, body, says in cases:
        status, answer = app.call("POST", path, body)
        assert status == 400 and says in answer["error"], (path, body, status, answer)
    status, answer = app.call("POST", "/api/points", b'{"points": [[1e400, 2]]}',
                              headers={"Content-Type": "application/json"})
    assert status == 400 and "finite" in answer["error"]
    intact(app)
    assert np.array_equal(app.session.masks[0], first_mask())


def bomb() -> bytes:
    """A 1x1 PNG whose header claims 100000x100000 pixels (40 GB decoded)."""
    data = bytearray(png(np.zeros((1, 1), np.uint8), "L"))
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_a_bomb_or_a_jpeg_is_refused_as_a_mask(app):
    status, answer = app.call("PUT", "/api/mask/0", bomb())
    assert status == 400 and answer["error"], answer
    out = io.BytesIO()
    Image.fromarray(first_mask() * 255).save(out, format="JPEG")
    status, answer = app.call("PUT", "/api/mask/0", out.getvalue())
    assert status == 400 and "must be a PNG" in answer["error"]
    intact(app)


class Held(IdentityPropagator):
    """The identity baseline, held at frame 2 until the test lets it go."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def copy(self, features, cells):
        for index, labels in enumerate(super().copy(features, cells), 1):
            if index == 2:
                assert self.go.wait(60)
            yield labels


def test_while_propagating_open_upload_edit_and_export_are_refused(tmp_path):
    write_video(tmp_path / "clip.mp4", moving_texture(6, W, H), 10)
    write_video(tmp_path / "other.mp4", moving_texture(9, W, H), 10)
    with served(tmp_path) as app:
        app.session.propagator = held = Held()
        app.session.open("clip.mp4")
        app.session.set_mask(0, first_mask())
        assert app.call("POST", "/api/track", {"mode": "masks"})[0] == 202
        for path, body in (("/api/open", {"path": "other.mp4"}),
                           ("/api/export", {"folder": "out"}),
                           ("/api/track", {"mode": "masks"}),
                           ("/api/points", {"points": [[1, 1]]})):
            status, answer = app.call("POST", path, body)
            assert status == 400 and "propagating is running" in answer["error"], answer
        assert app.call("PUT", "/api/mask/3", png(first_mask(), "L"))[0] == 400
        state = app.state()
        assert state["activity"] == "propagating" and state["progress"]["running"]
        held.go.set()
        wait(app)
        state = app.state()
        assert state["frames"] == 6 and state["video"].endswith("clip.mp4")
        progress = state["progress"]
        assert progress["done"] == progress["total"] == 12 and not progress["error"]  # embed, track
        assert sorted(app.session.results) == list(range(6))
        status, answer = app.call("POST", "/api/export", {"folder": "out"})
        assert status == 200 and answer["message"] == "exported 6 frames to out"
