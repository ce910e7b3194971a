"""Masks given at several frames: each replaces its frame's prediction and is tracked on."""

import numpy as np
import pytest

from colortrack.cli import main
from colortrack.config import PropagationConfig
from colortrack.data.annotations import read_masks, write_mask
from colortrack.errors import ColortrackError
from colortrack.track.baselines import FlowPropagator, IdentityPropagator
from colortrack.track.corrections import Corrections
from colortrack.track.propagator import LearnedPropagator
from colortrack.track.tracking import Tracker

from .test_learned import iou, square_on_texture

SMALL = PropagationConfig(context=3, topk=5, radius=4)


def with_second_object(frames=10, at=5):
    """The sliding red square, and a green square that enters at frame `at` (annotated there)."""
    video, masks = square_on_texture(frames)
    for t in range(at, frames):
        video[t][52:68, 60 - t:76 - t] = (30, 200, 40)
        masks[t][52:68, 60 - t:76 - t] = 2
    return video, masks


METHODS = [LearnedPropagator.pixels(SMALL), IdentityPropagator(), FlowPropagator()]


@pytest.mark.parametrize("propagator", METHODS, ids=["pixels", "identity", "flow"])
def test_a_later_mask_replaces_its_frame_and_its_objects_are_tracked_both_ways(propagator):
    video, masks = with_second_object(at=0)
    first = np.where(masks[0] == 2, 0, masks[0])  # frame 0's mask misses the green square
    results = dict(Tracker(propagator).track(iter(video), {0: first, 5: masks[5]}))
    assert np.array_equal(results[0], first) and np.array_equal(results[5], masks[5])
    assert iou(results[4] == 2, masks[4] == 2) > 0.5  # corrected at 5, right at 4 as well
    assert not (results[1] == 2).any()  # nearer frame 0, whose mask rules there
    assert iou(results[9] == 2, masks[9] == 2) > 0.5  # identity: the 4-pixel shift alone
    if propagator.name == "pixels":
        assert iou(results[9] == 1, masks[9] == 1) > 0.6


@pytest.mark.parametrize("propagator", METHODS, ids=["pixels", "identity", "flow"])
def test_backward_tracking_is_forward_tracking_of_the_reversed_video(propagator):
    video, masks = square_on_texture(8)
    last = len(video) - 1
    session = Corrections(propagator, video)
    session.give(0, one_hot(masks[0]))
    session.give(last, one_hot(masks[last]))
    list(session.update())
    backward = [propagator.to_pixels(c, *masks[0].shape) for c in session.runs[(last, -1)]]
    reversed_ = list(propagator.propagate(iter(video[::-1]), one_hot(masks[last])))
    assert len(backward) == last - 1
    for got, want in zip(backward, reversed_, strict=False):
        np.testing.assert_allclose(got, want, atol=1e-5)


def one_hot(mask):
    return np.stack([mask == 0, mask == 1]).astype(np.float32)


def test_without_later_masks_tracking_is_unchanged():
    video, masks = square_on_texture()
    tracker = Tracker(LearnedPropagator.pixels(SMALL))
    for (_, a), (_, b) in zip(tracker.track(iter(video), masks[0]),
                              tracker.track(iter(video), {0: masks[0]}), strict=True):
        assert np.array_equal(a, b)


def test_a_mask_folder_names_frames_by_index_and_needs_frame_0(tmp_path):
    video, masks = with_second_object()
    write_mask(tmp_path / "00005.png", masks[5])
    (tmp_path / "notes.txt").write_text("not a mask")
    with pytest.raises(ColortrackError, match="00000.png"):
        read_masks(tmp_path)
    write_mask(tmp_path / "00000.png", masks[0])
    assert sorted(read_masks(tmp_path)) == [0, 5]
    write_mask(tmp_path / "00007.png", masks[7][:-1])
    with pytest.raises(ColortrackError, match="differ in size"):
        read_masks(tmp_path)


def test_track_takes_a_mask_folder_from_the_command_line(tmp_path):
    from colortrack.data.video_writer import VideoWriter

    video, masks = with_second_object()
    with VideoWriter(tmp_path / "v.mp4", 12, crf=0) as writer:
        for frame in video:
            writer.write(frame)
    folder = tmp_path / "masks"
    folder.mkdir()
    write_mask(folder / "00000.png", masks[0])
    write_mask(folder / "00005.png", masks[5])
    out = tmp_path / "out"
    assert main(["-q", "track", str(tmp_path / "v.mp4"), "--mask", str(folder), "--out",
                 str(out), "--method", "pixels", "--set", "radius=4"]) == 0
    from colortrack.data.annotations import read_mask

    assert np.array_equal(read_mask(out / "00005.png"), masks[5])
    assert iou(read_mask(out / "00009.png") == 2, masks[9] == 2) > 0.4


def test_later_keypoint_frames_are_corrections_tracked_both_ways(tmp_path):
    from colortrack.data.keypoints import write_track_json

    video, _ = square_on_texture(10)
    center = lambda t: np.array([22 + 3 * t, 36], np.float32)  # noqa: E731 (the square's middle)
    frames = [(0, np.array([[5.0, 5.0], center(0)]), np.array([True, False])),  # unseen at 0
              (4, np.array([[5.0, 5.0], center(4)]), np.array([True, True]))]  # seen from 4
    write_track_json(tmp_path / "points.json", ["corner", "middle"], (), frames)
    tracker = Tracker(LearnedPropagator.pixels(SMALL))
    run = tracker.track_points(iter(video), tmp_path / "points.json")
    tracks = {i: (xy, v) for i, xy, v in run}
    assert tracks[3][1][1] and tracks[4][1][1]  # tracked back from frame 4 as well
    assert np.abs(tracks[3][0][1] - center(3)).max() <= 8  # within a feature cell
    assert np.array_equal(tracks[4][0], frames[1][1].astype(np.float32))  # as given
    x, y = tracks[8][0][1]
    assert tracks[8][1][1] and 10 + 3 * 8 <= x <= 34 + 3 * 8 and 24 <= y <= 48  # on the square
