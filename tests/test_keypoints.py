"""Keypoint files: strict JSON parsing and round trips, CSV, BADJA and JHMDB readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colortrack.data.annotations import read_mask
from colortrack.data.badja import BADJA_JOINTS, BADJA_SKELETON, read_badja
from colortrack.data.jhmdb import JHMDB_JOINTS, JHMDB_SKELETON, jhmdb_positions, read_jhmdb
from colortrack.data.keypoints import (
    FORMAT,
    Keypoints,
    check_in_image,
    read_keypoints,
    read_track_json,
    write_track_csv,
    write_track_json,
)
from colortrack.errors import ColortrackError

FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def tracks(draw):
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
    n = len(names)
    skeleton = draw(st.lists(st.tuples(*[st.integers(0, n - 1)] * 2), max_size=4))
    indices = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True))
    coordinate = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    frames = []
    for frame in indices:
        xy = np.array(draw(st.lists(st.tuples(coordinate, coordinate), min_size=n, max_size=n)))
        visible = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        frames.append((frame, xy.astype(np.float32).reshape(n, 2), visible))
    return names, skeleton, frames


def valid_document() -> dict:
    return {
        "format": FORMAT,
        "names": ["nose", "tail"],
        "skeleton": [[0, 1]],
        "frames": [
            {"frame": 4, "points": [[10.0, 20.5, 1], [30, 40, 0]]},
            {"frame": 2, "points": [[11.0, 21.5, True], [31, 41, False]]},
        ],
    }


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keypoints")


@FAST
@given(track=tracks())
def test_json_round_trip(scratch, track):
    names, skeleton, frames = track
    path = scratch / "track.json"
    write_track_json(path, names, skeleton, frames)
    got_names, got_skeleton, got_frames = read_track_json(path)
    assert got_names == tuple(names) and got_skeleton == tuple(skeleton)
    want = sorted(frames, key=lambda f: f[0])
    assert [f[0] for f in got_frames] == [f[0] for f in want]
    for (_, xy, visible), (_, want_xy, want_visible) in zip(got_frames, want, strict=True):
        assert xy.dtype == np.float32 and np.array_equal(xy, want_xy)
        assert visible.dtype == bool and np.array_equal(visible, want_visible)
    first, points = read_keypoints(path)
    assert first == want[0][0] and points.names == tuple(names)


def test_read_keypoints_takes_the_earliest_frame(scratch):
    path = scratch / "points.json"
    path.write_text(json.dumps(valid_document()))
    frame, points = read_keypoints(path)
    assert frame == 2 and points.names == ("nose", "tail") and points.skeleton == ((0, 1),)
    assert points.xy.tolist() == [[11.0, 21.5], [31.0, 41.0]]
    assert points.visible.tolist() == [True, False]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other/1"), "format"),
        (lambda d: d.update(frames=[]), "frames"),
        (lambda d: d.update(names=["a", "a"]), "different"),
        (lambda d: d.update(extra=1), "unknown keys"),
        (lambda d: d.update(skeleton=[[0, 2]]), "skeleton"),
        (lambda d: d["frames"][0]["points"].pop(), "2 points"),
        (lambda d: d["frames"][0]["points"][0].__setitem__(0, "1"), "number"),
        (lambda d: d["frames"][0]["points"][0].__setitem__(2, 2), "visible"),
        (lambda d: d["frames"][1].update(frame=4), "more than once"),
        (lambda d: d["frames"][1].update(frame=-1), "frame index"),
    ],
)
def test_invalid_documents_are_named(scratch, change, message):
    document = valid_document()
    change(document)
    path = scratch / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ColortrackError, match=message) as error:
        read_keypoints(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text", ["", "{", "NaN", '{"x": Infinity}', "[" * 100000, "\udcff"])
def test_malformed_json(scratch, text):
    path = scratch / "malformed.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ColortrackError, match="malformed.json"):
        read_keypoints(path)


def test_non_finite_and_huge_numbers(scratch):
    path = scratch / "huge.json"
    for value in ("NaN", "1e999", "-Infinity", "1" + "0" * 400):
        text = json.dumps(valid_document()).replace("20.5", value)
        path.write_text(text)
        with pytest.raises(ColortrackError):
            read_keypoints(path)


def _expect_colortrack_error_or_nothing(read, path: Path) -> None:
    try:
        read(path)
    except ColortrackError as error:
        assert str(path) in str(error)


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash_the_parsers(scratch, data):
    path = scratch / "random.bin"
    path.write_bytes(data)
    for read in (read_keypoints, read_badja, read_jhmdb):
        _expect_colortrack_error_or_nothing(read, path)


@FAST
@given(value=json_values)
def test_random_json_never_crashes_the_parsers(scratch, value):
    path = scratch / "random.json"
    path.write_text(json.dumps(value))
    for read in (read_keypoints, read_badja):
        _expect_colortrack_error_or_nothing(read, path)


@FAST
@given(
    path_in_document=st.sampled_from(["names", "skeleton", "frames", "format"]), value=json_values
)
def test_valid_document_with_one_random_field(scratch, path_in_document, value):
    document = valid_document()
    document[path_in_document] = value
    path = scratch / "mutated.json"
    path.write_text(json.dumps(document))
    _expect_colortrack_error_or_nothing(read_keypoints, path)


@FAST
@given(value=json_values, joint=st.integers(0, 36), key=st.sampled_from(["joints", "visibility"]))
def test_badja_with_one_random_joint(scratch, value, joint, key):
    entry = {"image_path": "DAVIS/x/00005.jpg", "joints": [[1, 2]] * 37, "visibility": [True] * 37}
    entry[key] = list(entry[key])
    entry[key][joint] = value
    path = scratch / "badja.json"
    path.write_text(json.dumps([entry]))
    _expect_colortrack_error_or_nothing(read_badja, path)


array_values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=4),
    st.builds(np.zeros, st.sampled_from([(2, 15, 3), (2, 15, 0), (15, 2, 3), (2, 15), (3,)])),
    st.builds(lambda v: np.full((2, 15, 2), v), st.floats() | st.integers(-(10**9), 10**9)),
    st.builds(lambda: np.array([["a"] * 15] * 2, dtype=object)[..., None]),
    st.builds(lambda: np.ones((2, 15, 2), dtype=complex)),
)


@FAST
@given(mat=st.dictionaries(st.sampled_from(["pos_img", "pos_world", "x"]), array_values))
def test_random_jhmdb_dicts(mat):
    try:
        positions = jhmdb_positions(mat, "joints.mat")
    except ColortrackError as error:
        assert "joints.mat" in str(error)
    else:
        assert positions.dtype == np.float32 and positions.shape[1:] == (15, 2)
        assert np.isfinite(positions).all()


def test_check_in_image():
    points = Keypoints(("a", "b"), np.array([[5, 5], [50, 5]], np.float32), np.array([1, 0], bool))
    check_in_image(points, 10, 10, "p.json")  # the point outside is not visible
    visible = Keypoints(points.names, points.xy, np.array([True, True]))
    with pytest.raises(ColortrackError, match="p.json.*'b'.*outside the 10x10"):
        check_in_image(visible, 10, 10, "p.json")


def test_csv(scratch):
    frames = [(3, np.array([[1.5, 2.0], [3.25, 4.0]], np.float32), np.array([True, False]))]
    path = scratch / "track.csv"
    write_track_csv(path, ["nose", "left, ear"], frames)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["nose", "left, ear"]
    assert rows[1] == {"frame": "3", "point": "1", "name": "left, ear", "x": "3.25", "y": "4.0",
                       "visible": "0"}  # fmt: skip
    with pytest.raises(ValueError):
        write_track_csv(path, ["only one"], frames)


def test_writers_refuse_bad_tracks(scratch):
    xy, visible = np.zeros((1, 2), np.float32), np.ones(1, bool)
    with pytest.raises(ValueError):
        write_track_json(scratch / "x.json", ["a"], [], [(0, xy * np.nan, visible)])
    with pytest.raises(ValueError):
        write_track_json(scratch / "x.json", ["a"], [(0, 1)], [(0, xy, visible)])
    assert not (scratch / "x.json").exists()


def test_badja_dog(data_dir):
    frames = read_badja(data_dir / "badja" / "joint_annotations" / "dog.json")
    assert len(frames) == 12 and len(BADJA_JOINTS) == 20
    assert all(i < 20 and j < 20 for i, j in BADJA_SKELETON)
    assert frames[0][0] == 3 and [f for f, _, _ in frames] == sorted(f for f, _, _ in frames)
    inside = total = 0
    for frame, xy, visible in frames:
        assert xy.shape == (20, 2) and visible.shape == (20,)
        assert visible.any()
        mask = read_mask(
            data_dir / "davis2016-dev" / "Annotations" / "480p" / "dog" / f"{frame:05d}.png"
        )
        assert mask.shape == (480, 854)
        for x, y in xy[visible]:
            assert 0 <= x <= 854 and 0 <= y <= 480
            near = mask[max(0, int(y) - 6) : int(y) + 7, max(0, int(x) - 6) : int(x) + 7]
            inside += bool(near.any())
            total += 1
    assert inside >= 0.9 * total  # x/y are not swapped: the joints sit on the dog


def test_badja_scales_to_other_sizes(data_dir):
    path = data_dir / "badja" / "joint_annotations" / "camel.json"
    small = read_badja(path, image_size=(427, 240))
    full = read_badja(path)
    assert np.allclose(small[0][1] * 2, full[0][1], atol=1e-3)


def test_jhmdb_sample(data_dir):
    positions = read_jhmdb(data_dir / "jhmdb-sample" / "joint_positions.mat")
    assert positions.shape == (40, 15, 2) and positions.dtype == np.float32
    assert positions[0, 0].tolist() == [285.5, 105.5]  # neck, MATLAB (286.5, 106.5) minus 1
    assert (positions[..., 0] < 320).all() and (positions[..., 1] < 240).all()
    assert len(JHMDB_JOINTS) == 15 and all(i < 15 and j < 15 for i, j in JHMDB_SKELETON)
