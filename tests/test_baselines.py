"""The baselines: identity repeats frame 0, flow follows a translating texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colortrack.data.annotations import one_hot
from colortrack.errors import ColortrackError
from colortrack.track.baselines import FlowPropagator, IdentityPropagator

H, W, SHIFT = 96, 128, 3  # the texture moves SHIFT px right per frame


def texture_video(frames: int = 6) -> list[np.ndarray]:
    """A blurred random texture translating right; smooth enough for optical flow."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((H + 40, W + 80)) * 255).astype(np.uint8), (0, 0), 2)
    texture = np.repeat(texture[..., None], 3, axis=2)
    start = 3 * frames
    return [
        np.ascontiguousarray(texture[20 : 20 + H, start - SHIFT * t :][:, :W])
        for t in range(frames)
    ]


def square(t: int) -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.uint8)
    ids[30:60, 40 + SHIFT * t : 70 + SHIFT * t] = 1
    return ids


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_identity_repeats_the_first_labels() -> None:
    labels = one_hot(square(0))
    frames = [object()] * 5  # identity never looks at pixels
    out = list(IdentityPropagator().propagate(frames, labels))  # type: ignore[arg-type]
    assert len(out) == 4
    for predicted in out:
        assert predicted.dtype == np.float32
        np.testing.assert_array_equal(predicted, labels)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_flow_moves_a_square_with_the_texture(scale: float) -> None:
    frames = texture_video()
    labels = list(FlowPropagator(scale=scale).propagate(frames, one_hot(square(0))))
    assert len(labels) == len(frames) - 1
    for t, soft in enumerate(labels, start=1):
        assert soft.shape == (2, H, W)
        np.testing.assert_allclose(soft.sum(axis=0), 1.0, atol=1e-4)
        assert iou(soft.argmax(0) == 1, square(t) == 1) > 0.8


def test_flow_refuses_labels_of_another_size() -> None:
    frames = texture_video(2)
    with pytest.raises(ColortrackError, match="frames are"):
        list(FlowPropagator().propagate(frames, np.zeros((2, H + 1, W), np.float32)))


def test_flow_of_an_empty_video_is_empty() -> None:
    assert list(FlowPropagator().propagate([], one_hot(square(0)))) == []
