"""Corrections: given masks tracked both ways, recomputed only where they change, scored by a
simulated user who corrects the frame the tracker is least sure of."""

import csv

import numpy as np
import pytest
import torch

from colortrack.cli import main
from colortrack.config import PropagationConfig
from colortrack.eval.corrections import area, simulate
from colortrack.track.corrections import Corrections, Spill, confidence, two_way
from colortrack.track.propagator import LearnedPropagator
from colortrack.track.tracking import Tracker, argmax_channels

from .test_annotated_frames import one_hot
from .test_learned import square_on_texture

SMALL = PropagationConfig(context=3, topk=5, radius=4)


def tracked(session: Corrections) -> list[np.ndarray]:
    return [argmax_channels(session.labels(t)) for t in range(len(session.frames))]


def test_a_correction_recomputes_only_between_its_neighbours_and_equals_a_full_rerun():
    video, masks = square_on_texture(12)
    propagator = LearnedPropagator.pixels(SMALL)
    session = Corrections(propagator, video)
    session.give(0, one_hot(masks[0]))
    assert list(session.update()) == list(range(12))
    session.give(8, one_hot(masks[8]))
    assert session.stale() == list(range(12))  # [0, 8] both ways, then 8 onwards
    assert list(session.update()) == list(range(12)) and session.stale() == []
    session.give(4, one_hot(masks[4]))
    assert list(session.update()) == list(range(8))  # only between its neighbours 0 and 8
    rerun = Corrections(propagator, video)
    for t in (0, 8, 4):
        rerun.give(t, one_hot(masks[t]))
    list(rerun.update())
    streamed = dict(Tracker(propagator).track(iter(video), {t: masks[t] for t in (0, 4, 8)}))
    for t, (a, b) in enumerate(zip(tracked(session), tracked(rerun), strict=True)):
        assert np.array_equal(a, b) and np.array_equal(a, streamed[t])
    session.forget(4)
    assert list(session.update()) == list(range(8))
    alone = dict(Tracker(propagator).track(iter(video), {t: masks[t] for t in (0, 8)}))
    assert all(np.array_equal(a, alone[t]) for t, a in enumerate(tracked(session)))


def test_confidence_is_lower_where_the_object_was_replaced_by_background():
    video, masks = square_on_texture(10)
    video[6] = video[0].copy()
    video[6][masks[0] == 1] = video[9][masks[0] == 1]  # the square gone: texture only
    session = Corrections(LearnedPropagator.pixels(SMALL), video)
    session.give(0, one_hot(masks[0]))
    list(session.update())
    others = [session.confidence[t] for t in range(1, 6)]
    assert session.confidence[6] < min(others)
    assert session.least_confident() in range(6, 10)
    assert confidence(np.stack([np.ones((4, 4)), np.zeros((4, 4))])) == 0.0  # object lost


def test_frames_spilled_to_disk_come_back_the_same():
    video, masks = square_on_texture(10)
    propagator = LearnedPropagator.pixels(SMALL)
    features = list(propagator.features(video))
    given = {6: one_hot(masks[6])}

    def run(budget):
        items = iter(zip(video[1:], features[1:], strict=True))
        return list(two_way(propagator, items, (one_hot(masks[0]), features[0]), given,
                            budget=budget))

    for (i, frame, soft, sure), (j, frame2, soft2, sure2) in zip(run(1 << 30), run(0),
                                                                 strict=True):
        assert i == j and sure == sure2
        assert np.array_equal(frame, frame2) and np.array_equal(soft, soft2)
    spill = Spill(budget=0)
    spill.append((video[0], None, features[0]))
    frame, nothing, tensor = spill[0]
    assert np.array_equal(frame, video[0]) and nothing is None
    assert torch.equal(tensor, features[0]) and tensor.device == features[0].device
    spill.close()


def test_a_mask_given_past_the_video_is_an_error():
    video, masks = square_on_texture(5)
    with pytest.raises(Exception, match="frame 7"):
        list(Tracker(LearnedPropagator.pixels(SMALL)).track(iter(video),
                                                            {0: masks[0], 7: masks[0]}))


@pytest.mark.parametrize("user", ["confidence", "oracle"])
def test_the_simulated_user_gives_frames_not_yet_given_and_scores_the_rest(user):
    video, masks = square_on_texture(10, step=6)
    truth = np.stack(masks)
    scores, given = simulate(LearnedPropagator.pixels(SMALL), video, truth, 3, user)
    assert len(scores) == 4 and len(set(given)) == 3 and 0 not in given
    assert all(0 <= s["J"] <= 100 and 0 <= s["F"] <= 100 for s in scores)
    assert area([60.0, 80.0, 90.0]) == pytest.approx(77.5)


def test_track_writes_the_confidence_of_every_frame(clip, tmp_path):
    video, mask = clip
    out = tmp_path / "out"
    assert main(["-q", "track", str(video), "--mask", str(mask), "--out", str(out),
                 "--method", "pixels"]) == 0
    with open(out / "confidence.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list(out.glob("*.png")))
    assert float(rows[0]["confidence"]) == 1.0
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
