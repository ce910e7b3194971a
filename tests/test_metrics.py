"""J, F, their statistics and PCK: hand-counted cases and agreement with vos-benchmark."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from colortrack.data.annotations import read_mask
from colortrack.errors import ColortrackError, UsageError
from colortrack.eval.metrics import (
    _boundary_map,
    boundary_f,
    evaluate_sequence,
    jaccard,
    pck,
    statistics,
)
from tests.conftest import data_root

evaluator = pytest.importorskip("vos_benchmark.evaluator")


def square(top: int, left: int, size: int = 2, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def reference(gt_ids: np.ndarray, pred_ids: np.ndarray, bound_th: float = 0.008) -> tuple:
    """vos-benchmark's J and F lists (its F is the official davis2017-evaluation code)."""
    ev = evaluator.Evaluator(boundary=bound_th)
    ev.feed_frame(pred_ids, gt_ids)
    return ev.object_iou, ev.boundary_f


def test_jaccard_hand_counted() -> None:
    gt = square(1, 1, 3)
    pred = square(2, 2, 3)
    assert jaccard(gt, pred) == pytest.approx(4 / 14)
    assert jaccard(gt, gt) == 1.0
    void = np.zeros_like(gt)
    void[1, :] = True
    assert jaccard(gt, pred, void) == pytest.approx(4 / 11)


def test_jaccard_empty_cases() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(empty, square(0, 0, shape=(5, 5))) == 0.0
    assert jaccard(square(0, 0, shape=(5, 5)), empty) == 0.0


def test_boundary_map_hand_drawn() -> None:
    expected = np.zeros((8, 8), dtype=bool)
    expected[0:3, 0:3] = True
    expected[1, 1] = False
    np.testing.assert_array_equal(_boundary_map(square(1, 1)), expected)
    edge = _boundary_map(square(1, 6))
    assert edge[:3, 5:].tolist() == [[True, True, True], [True, False, False], [True, True, True]]


def test_boundary_f_hand_counted() -> None:
    # Both boundaries have 8 pixels; 5 of each lie within 1 pixel (a cross) of the other.
    gt, pred = square(1, 1), square(1, 3)
    assert boundary_f(gt, pred, bound_th=1) == pytest.approx(0.625)
    assert boundary_f(gt, pred) == pytest.approx(0.625)  # ceil(0.008 * 11.3) = 1 pixel
    assert boundary_f(gt, pred, bound_th=2) == 1.0
    assert boundary_f(gt, gt) == 1.0


def test_boundary_f_edge_cases() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    full = ~empty
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(square(1, 1), empty) == 0.0
    assert boundary_f(empty, square(1, 1)) == 0.0
    assert boundary_f(full, full) == 1.0
    # A full-frame mask has no boundary: against an empty one, both boundaries are empty.
    assert boundary_f(full, empty) == 1.0
    assert boundary_f(full, square(1, 1)) == 0.0


def test_boundary_f_void_masks_both() -> None:
    gt, pred = square(1, 1, 3), square(2, 2, 4)
    void = np.zeros_like(gt)
    void[:, 4:] = True
    assert boundary_f(gt, pred, void=void) == boundary_f(gt & ~void, pred & ~void)


masks = arrays(bool, st.tuples(st.integers(2, 14), st.integers(2, 14)))


@settings(max_examples=150, deadline=None)
@given(masks, st.data(), st.sampled_from([0.008, 0.05, 0.1, 0.3]))
def test_matches_vos_benchmark_on_random_masks(gt: np.ndarray, data, bound_th: float) -> None:
    pred = data.draw(arrays(bool, gt.shape))
    gt_ids, pred_ids = gt.astype(np.uint8), pred.astype(np.uint8)
    if not gt.any() and not pred.any():
        return
    ious, fs = reference(gt_ids, pred_ids, bound_th)
    assert jaccard(gt, pred) == pytest.approx(ious[1][0], abs=1e-12)
    assert boundary_f(gt, pred, bound_th) == pytest.approx(fs[1][0], abs=1e-12)


def perturbations(gt: np.ndarray) -> list[np.ndarray]:
    kernel = np.ones((7, 7), np.uint8)
    shifted = np.zeros_like(gt)
    shifted[4:, :-6] = gt[:-4, 6:]
    return [
        shifted,
        cv2.erode(gt, kernel),
        cv2.dilate(gt, kernel, iterations=2),
        np.zeros_like(gt),
        cv2.dilate(np.roll(gt, (40, 60), axis=(0, 1)), kernel),
    ]


def test_matches_vos_benchmark_on_real_davis_masks() -> None:
    root = data_root() / "davis2016-dev" / "Annotations" / "480p"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    worst = 0.0
    for sequence in ("blackswan", "bmx-trees", "kite-surf"):
        for path in sorted((root / sequence).glob("*.png"))[5::15]:
            gt = read_mask(path)
            for pred in perturbations(gt):
                ious, fs = reference(gt, pred)
                worst = max(worst, abs(jaccard(gt == 1, pred == 1) - ious[1][0]))
                worst = max(worst, abs(boundary_f(gt == 1, pred == 1) - fs[1][0]))
    assert worst <= 1e-6


def synthetic_video(rng: np.random.Generator, frames: int = 6) -> np.ndarray:
    video = np.zeros((frames, 60, 80), dtype=np.uint8)
    for t in range(frames):
        cv2.circle(video[t], (20 + 2 * t, 30), 12, 1, -1)
        cv2.rectangle(video[t], (45, 5 + t), (75, 25 + t), 2, -1)
        cv2.ellipse(video[t], (50, 45), (20, 8), 10 * t, 0, 360, 3, -1)
    video[rng.random(video.shape) < 0.01] = 0
    return video


def test_evaluate_sequence_matches_vos_benchmark_multi_object() -> None:
    rng = np.random.default_rng(0)
    gt = synthetic_video(rng)
    pred = np.roll(gt, 2, axis=2)
    pred[pred == 3] = 0  # object 3 is lost
    pred[2, 0:10, 0:10] = 2
    scores = evaluate_sequence(gt, pred)
    assert scores.j.shape == scores.f.shape == (3, 4)
    ev = evaluator.Evaluator()
    for t in range(1, 5):
        ev.feed_frame(pred[t], gt[t])
    for k in range(3):
        np.testing.assert_allclose(scores.j[k], ev.object_iou[k + 1], atol=1e-12)
        np.testing.assert_allclose(scores.f[k], ev.boundary_f[k + 1], atol=1e-12)
    assert np.all(scores.j[2] == 0) and np.all(scores.f[2] == 0)


def test_evaluate_sequence_rules() -> None:
    gt = synthetic_video(np.random.default_rng(1), frames=4)
    gt[:, 0, 0] = 255  # void
    perfect = np.where(gt == 255, 0, gt)
    scores = evaluate_sequence(gt, perfect)
    assert np.all(scores.j == 1) and np.all(scores.f == 1)
    extra = perfect.copy()
    extra[1, 0, 1] = 4
    with pytest.raises(ColortrackError, match="object id 4"):
        evaluate_sequence(gt, extra)
    extra[1, 0, 1] = 0
    extra[0, 0, 1] = 4  # the first frame is not scored, so not checked
    evaluate_sequence(gt, extra)
    with pytest.raises(ColortrackError, match="at least 3 frames"):
        evaluate_sequence(gt[:2], gt[:2])
    with pytest.raises(ColortrackError, match="no object"):
        evaluate_sequence(np.zeros_like(gt), gt)


def test_statistics_known_arrays() -> None:
    mean, recall, decay = statistics(np.array([1.0, 1.0, 0.4, 0.2, 0.0]))
    assert (mean, recall, decay) == pytest.approx((0.52, 0.4, 0.9))
    # N = 7: bin edges 1, 2.5, 4, 5.5, 7 round half up to 0, 2, 3, 5, 6 (first bin = 3 frames).
    assert statistics(np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))[2] == pytest.approx(2 / 3)
    # Longer than 256 frames: the official uint8 edges would wrap; these do not.
    assert statistics(np.r_[np.ones(150), np.zeros(150)]) == pytest.approx((0.5, 0.5, 1.0))
    mean, recall, _ = statistics(np.array([math.nan, 1.0, 0.2]))
    assert mean == pytest.approx(0.6) and recall == pytest.approx(1 / 3)
    assert statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))


def test_pck_hand_case() -> None:
    gt = np.array([[[0, 0], [3, 0], [0, 4]], [[10, 10], [10, 20], [50, 50]]], dtype=float)
    pred = gt.copy()
    pred[0, 1] += (0.5, 0)  # box diagonal 5 -> jhmdb size 3: correct from alpha 0.2
    pred[0, 2] += (0, 1.0)  # correct from alpha 0.4
    pred[1, 1] += (0, 2.5)  # frame 1 box is 0 x 10 (joint 2 hidden): size 6; from alpha 0.5
    pred[1, 2] += (100, 0)  # hidden: ignored
    visible = np.array([[True, True, True], [True, True, False]])
    result = pck(pred, gt, visible)
    # Per joint then averaged: joint 0 always right; joint 1 over 2 frames; joint 2 over 1.
    assert result == pytest.approx(
        {"PCK@0.1": 100 / 3, "PCK@0.2": 50.0, "PCK@0.3": 50.0, "PCK@0.4": 250 / 3, "PCK@0.5": 100.0}
    )
    # "box": size = longer box side (4 in frame 0, 10 in frame 1).
    box = pck(pred, gt, visible, alphas=(0.125, 0.25), reference="box")
    assert box == pytest.approx({"PCK@0.125": 50.0, "PCK@0.25": 100.0})


def test_pck_rejects_bad_input() -> None:
    xy = np.zeros((2, 3, 2))
    with pytest.raises(UsageError):
        pck(xy, xy, np.ones((2, 3), bool), reference="torso")
    with pytest.raises(UsageError):
        pck(xy, xy[:1], np.ones((2, 3), bool))
    with pytest.raises(ColortrackError):
        pck(xy, xy, np.zeros((2, 3), bool))
