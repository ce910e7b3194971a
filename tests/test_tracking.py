"""The Tracker API: masks and points through the baselines, input checks, output folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from colortrack.data.annotations import read_mask, write_mask
from colortrack.data.keypoints import Keypoints, write_track_json
from colortrack.data.outputs import MANIFEST
from colortrack.errors import ColortrackError, UsageError
from colortrack.track.baselines import IdentityPropagator
from colortrack.track.tracking import (
    Tracker,
    argmax_channels,
    decode_heatmaps,
    heatmaps,
    make_propagator,
    track_to_dir,
)

H, W, SHIFT, N = 64, 96, 2, 5


def video() -> list[np.ndarray]:
    """A blurred random texture translating SHIFT px right per frame."""
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur((rng.random((H, W + 40)) * 255).astype(np.uint8), (0, 0), 2)
    texture = np.repeat(texture[..., None], 3, axis=2)
    return [np.ascontiguousarray(texture[:, 20 - SHIFT * t : 20 - SHIFT * t + W]) for t in range(N)]


def first_mask() -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.uint8)
    ids[20:40, 30:50] = 2  # ids need not be contiguous
    ids[45:60, 60:80] = 5
    return ids


@pytest.mark.parametrize("method", ["identity", "flow"])
def test_one_mask_per_frame_at_input_size(method: str) -> None:
    tracker = Tracker.from_pretrained(method=method)
    results = list(tracker.track(video(), first_mask()))
    assert [index for index, _ in results] == list(range(N))
    np.testing.assert_array_equal(results[0][1], first_mask())
    for _, ids in results:
        assert ids.shape == (H, W) and ids.dtype == np.uint8
        assert set(np.unique(ids).tolist()) <= {0, 2, 5}
    if method == "flow":
        moved = np.roll(first_mask(), SHIFT * (N - 1), axis=1) == 2
        overlap = (results[-1][1] == 2) & moved
        assert overlap.sum() / ((results[-1][1] == 2) | moved).sum() > 0.8


def test_mask_from_a_file(tmp_path: Path) -> None:
    write_mask(tmp_path / "first.png", first_mask())
    results = list(
        Tracker.from_pretrained(method="identity").track(video(), tmp_path / "first.png")
    )
    assert len(results) == N


def test_mask_size_mismatch_is_an_error() -> None:
    tracker = Tracker.from_pretrained(method="identity")
    with pytest.raises(ColortrackError, match="mask is 95x64 but the video frames are 96x64"):
        list(tracker.track(video(), first_mask()[:, :-1]))


def test_empty_mask_and_empty_video_are_errors() -> None:
    tracker = Tracker.from_pretrained(method="identity")
    with pytest.raises(ColortrackError, match="empty"):
        list(tracker.track(video(), np.zeros((H, W), np.uint8)))
    with pytest.raises(ColortrackError, match="no frames"):
        list(tracker.track([], first_mask()))


def test_missing_video_file_is_an_error(tmp_path: Path) -> None:
    tracker = Tracker.from_pretrained(method="identity")
    with pytest.raises(ColortrackError, match="no such file"):
        list(tracker.track(tmp_path / "nope.mp4", first_mask()))


def test_make_propagator_checks_its_arguments() -> None:
    with pytest.raises(UsageError, match="unknown method"):
        make_propagator("magic")
    with pytest.raises(UsageError, match="only apply to method 'model'"):
        make_propagator("flow", model="x.pt")


def test_heatmaps_round_trip_to_subpixel_points() -> None:
    xy = np.array([[10.25, 20.5], [70.0, 5.0], [0.0, 0.0]], dtype=np.float32)
    visible = np.array([True, True, False])
    maps = heatmaps(xy, visible, (H, W), sigma=4.0)
    assert maps.shape == (4, H, W)
    np.testing.assert_allclose(maps.max(axis=(1, 2))[1:], [1.0, 1.0, 0.0], atol=0.05)
    fallback = np.full((3, 2), -1.0, dtype=np.float32)
    decoded, seen = decode_heatmaps(maps, 0.1, fallback=fallback)
    np.testing.assert_allclose(decoded[:2], xy[:2], atol=0.5)
    np.testing.assert_array_equal(decoded[2], [-1.0, -1.0])
    np.testing.assert_array_equal(seen, visible)


def test_points_round_trip_and_follow_the_texture() -> None:
    xy = np.array([[30.0, 20.0], [60.0, 40.0]], dtype=np.float32)
    points = Keypoints(("a", "b"), xy, np.array([True, True]), ((0, 1),))
    still = list(Tracker.from_pretrained(method="identity").track_points(video(), points))
    assert [index for index, _, _ in still] == list(range(N))
    for _, found, visible in still:
        np.testing.assert_allclose(found, xy, atol=0.5)
        assert visible.all()
    moving = list(Tracker.from_pretrained(method="flow").track_points(video(), points))
    shift = np.array([SHIFT * (N - 1), 0.0])
    np.testing.assert_allclose(moving[-1][1], xy + shift, atol=1.5)


def test_points_from_a_file_start_at_their_frame(tmp_path: Path) -> None:
    xy = np.array([[30.0, 20.0], [200.0, 10.0]], dtype=np.float32)
    write_track_json(tmp_path / "p.json", ["a", "b"], [], [(2, xy, np.array([True, False]))])
    results = list(
        Tracker.from_pretrained(method="flow").track_points(video(), tmp_path / "p.json")
    )
    assert [index for index, _, _ in results] == list(range(2, N))
    assert not any(visible[1] for _, _, visible in results)
    np.testing.assert_allclose(results[-1][1][0], xy[0] + [SHIFT * (N - 3), 0], atol=1.5)


def test_points_outside_the_frame_are_an_error() -> None:
    points = Keypoints(("a",), np.array([[500.0, 10.0]], np.float32), np.array([True]))
    with pytest.raises(ColortrackError, match="outside"):
        list(Tracker.from_pretrained(method="identity").track_points(video(), points))


def test_track_to_dir_writes_and_protects_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tracker = Tracker.from_pretrained(method="identity")
    summary = track_to_dir(tracker, video(), first_mask(), out, progress=False)
    assert summary.frames == N
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(N)]
    assert (out / "overlay.mp4").stat().st_size > 0
    np.testing.assert_array_equal(read_mask(out / "00003.png"), first_mask())
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ColortrackError, match="overwrite"):
        track_to_dir(tracker, video(), first_mask(), out, progress=False)
    track_to_dir(tracker, video(), first_mask(), out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MANIFEST]


class LosesTheObject(IdentityPropagator):
    """A tracker that keeps frame 0's labels for one frame, then sees only background."""

    name = "loses-the-object"

    def copy(self, features, cells):
        lost = np.zeros_like(cells)
        lost[0] = 1
        for index, _ in enumerate(super().copy(features, cells)):
            yield cells if index == 0 else lost


def test_a_mask_that_vanishes_gets_a_warning(tmp_path: Path, caplog) -> None:
    lost = track_to_dir(Tracker(LosesTheObject()), video(), first_mask(), tmp_path / "a",
                        progress=False)
    assert lost.vanished == 2
    assert f"warning: the mask is empty from frame 2 to the end ({N - 2} of {N} frames)" in (
        caplog.text)
    caplog.clear()
    kept = track_to_dir(Tracker.from_pretrained(method="identity"), video(), first_mask(),
                        tmp_path / "b", progress=False)
    assert kept.vanished is None and "warning" not in caplog.text


def test_import_colortrack_is_light() -> None:
    code = "import sys, colortrack; print('numpy' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"]
    from colortrack import Tracker as Exported

    assert Exported is Tracker


def test_overlay_and_gif(tmp_path: Path) -> None:
    from PIL import Image

    from colortrack.data.annotations import DAVIS_PALETTE
    from colortrack.track.visualize import draw_points, overlay_mask, write_gif

    frame = np.zeros((H, W, 3), np.uint8)
    shown = overlay_mask(frame, first_mask(), alpha=1.0, contour=0)
    np.testing.assert_array_equal(shown[30, 40], DAVIS_PALETTE[2])
    np.testing.assert_array_equal(shown[0, 0], [0, 0, 0])
    drawn = draw_points(frame, np.array([[10.0, 10.0], [50.0, 30.0]]), [True, False], [(0, 1)])
    assert drawn[10, 10].any() and not drawn[30, 50].any()
    write_gif(tmp_path / "a.gif", [shown, drawn], fps=5)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (W, H)


def test_overlay_blends_every_object_pixel_and_outlines_only_near_objects() -> None:
    from colortrack.data.annotations import DAVIS_PALETTE
    from colortrack.track.visualize import overlay_mask

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ids = np.zeros((H, W), np.uint8)
    ids[5:20, 60:90], ids[40:55, 10:25] = 1, 7  # two objects: their box spans most of the frame
    expected = frame.copy()
    fg = ids > 0
    blend = frame[fg] * 0.4 + DAVIS_PALETTE[ids[fg]] * 0.6
    expected[fg] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay_mask(frame, ids, alpha=0.6, contour=0), expected)
    outlined = overlay_mask(frame, ids, alpha=0.6, contour=2)
    changed = (outlined != expected).any(-1)
    near = np.zeros_like(fg)
    near[2:23, 57:93] = near[37:58, 7:28] = True
    assert changed.any() and not (changed & ~near).any()
    np.testing.assert_array_equal(overlay_mask(frame, np.zeros_like(ids)), frame)


def test_argmax_channels_matches_numpy_including_ties():
    rng = np.random.default_rng(0)
    soft = rng.integers(0, 3, (4, 7, 9)).astype(np.float32)  # many ties
    assert np.array_equal(argmax_channels(soft), soft.argmax(0))
    assert argmax_channels(soft).dtype == np.uint8
