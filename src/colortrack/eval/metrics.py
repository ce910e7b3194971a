"""Evaluation metrics: the DAVIS region (J) and boundary (F) measures, and keypoint PCK.

J, F and their statistics reproduce the numbers of the official DAVIS code
(github.com/davisvideochallenge/davis2017-evaluation: ``metrics.py`` and ``utils.py``), so scores
can be compared with published ones. This is an independent implementation: it needs only numpy
and OpenCV (the boundary tolerance disk is built here, matching ``skimage.morphology.disk``), and
it crops every boundary computation to the objects' bounding box, which gives the same numbers in
a fraction of the time on 480p frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from colortrack.errors import ColortrackError, UsageError

VOID_ID = 255
"""Ground-truth id of "void" pixels, which the official protocol leaves out of J and F."""


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: intersection over union of two (H, W) boolean masks.

    Two empty masks agree perfectly, so an empty union scores 1 (as the official code does).
    Pixels marked in ``void`` count neither as intersection nor as union.
    """
    gt, pred = gt.astype(bool, copy=False), pred.astype(bool, copy=False)
    if void is not None:
        inside = ~void.astype(bool, copy=False)
        gt, pred = gt & inside, pred & inside
    union = int(np.count_nonzero(gt | pred))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred)) / union


def _disk(radius: float) -> np.ndarray:
    """The structuring element of ``skimage.morphology.disk(radius)`` as uint8."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def _boundary_map(seg: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary of a boolean mask, offset half a pixel towards the origin.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour; the
    last row compares only with the east neighbour and the last column only with the south one,
    and the bottom-right pixel is never a boundary (the official ``_seg2bmap`` rules).
    """
    boundary = np.zeros_like(seg)
    body = seg[:-1, :-1]
    boundary[:-1, :-1] = (body ^ seg[:-1, 1:]) | (body ^ seg[1:, :-1]) | (body ^ seg[1:, 1:])
    boundary[-1, :-1] = seg[-1, :-1] ^ seg[-1, 1:]
    boundary[:-1, -1] = seg[:-1, -1] ^ seg[1:, -1]
    return boundary


def _crop_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask, grown by one pixel on every side (clipped to the image).

    Boundaries of masks inside the box lie inside it, and the one-pixel empty margin makes the
    image-edge rules of ``_boundary_map`` give the same result on the crop as on the full frame.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, height)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, width)),
    )


def boundary_f(
    gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008, void: np.ndarray | None = None
) -> float:
    """Boundary measure F: F1 score of boundary pixels matched within a distance tolerance.

    The tolerance is ``bound_th`` pixels when it is >= 1, else ``ceil(bound_th * image diagonal)``
    (8 pixels at 480p), applied as a dilation with a disk. Edge cases as official: no boundary
    in either mask scores 1, a boundary in only one of them scores 0.
    """
    gt, pred = gt.astype(bool, copy=False), pred.astype(bool, copy=False)
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(gt.shape))
    if void is not None:
        inside = ~void.astype(bool, copy=False)
        gt, pred = gt & inside, pred & inside
    union = gt | pred
    if not union.any():
        return 1.0
    box = _crop_box(union)
    gt_boundary, pred_boundary = _boundary_map(gt[box]), _boundary_map(pred[box])
    n_gt, n_pred = int(np.count_nonzero(gt_boundary)), int(np.count_nonzero(pred_boundary))
    if n_gt == 0 or n_pred == 0:
        return 1.0 if n_gt == n_pred else 0.0
    disk = _disk(radius)
    gt_near = cv2.dilate(gt_boundary.view(np.uint8), disk).view(bool)
    pred_near = cv2.dilate(pred_boundary.view(np.uint8), disk).view(bool)
    precision = np.count_nonzero(pred_boundary & gt_near) / n_pred
    recall = np.count_nonzero(gt_boundary & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame scores, the official DAVIS summary of a sequence.

    Recall is the fraction of frames scoring above 0.5. Decay is the mean of the first quarter of
    the frames minus the mean of the last quarter (quarters as the official code cuts them: bin
    edges ``round(linspace(1, N, 5)) - 1`` with halves rounded up, each bin including its right
    edge). The official code stores the edges as uint8, which wraps for sequences longer than 256
    frames; they are plain integers here, so long sequences get the decay their frames imply.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(values))
    recall = float(np.mean(values > 0.5))
    edges = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(np.int64)
    first, last = values[edges[0] : edges[1] + 1], values[edges[3] : edges[4] + 1]
    decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


@dataclass(frozen=True)
class SequenceScores:
    """Per-frame J and F of one sequence: row k is object k + 1, column t is frame t + 1."""

    j: np.ndarray
    f: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.j.shape[0])

    def j_statistics(self) -> list[tuple[float, float, float]]:
        """(mean, recall, decay) of J for each object."""
        return [statistics(row) for row in self.j]

    def f_statistics(self) -> list[tuple[float, float, float]]:
        """(mean, recall, decay) of F for each object."""
        return [statistics(row) for row in self.f]


def evaluate_sequence(
    gt_ids: np.ndarray, pred_ids: np.ndarray, bound_th: float = 0.008
) -> SequenceScores:
    """Score a predicted (T, H, W) object-id video with the DAVIS semi-supervised protocol.

    The objects are ids 1..max of the first ground-truth frame (id 255 is void); frames 1..T-2
    are scored, since the first is given and the official protocol also skips the last. An
    object missing from the prediction scores as an empty mask; a prediction id above the
    object count is an error, as it is for the official code.
    """
    if gt_ids.ndim != 3 or gt_ids.shape != pred_ids.shape:
        raise ColortrackError(
            f"ground truth {gt_ids.shape} and prediction {pred_ids.shape} must be equal (T, H, W)"
        )
    if gt_ids.shape[0] < 3:
        raise ColortrackError(f"a sequence needs at least 3 frames to score, got {gt_ids.shape[0]}")
    first = gt_ids[0]
    num_objects = int(first[first != VOID_ID].max(initial=0))
    if num_objects == 0:
        raise ColortrackError("the first ground-truth frame has no object")
    gt_ids, pred_ids = gt_ids[1:-1], pred_ids[1:-1]
    top = int(pred_ids.max())
    if top > num_objects:
        raise ColortrackError(
            f"the prediction has object id {top} but the ground truth has {num_objects} object(s)"
        )
    j = np.empty((num_objects, gt_ids.shape[0]))
    f = np.empty_like(j)
    for t, (gt_frame, pred_frame) in enumerate(zip(gt_ids, pred_ids, strict=True)):
        void = gt_frame == VOID_ID
        void_or_none = void if void.any() else None
        for k in range(num_objects):
            gt_mask, pred_mask = gt_frame == k + 1, pred_frame == k + 1
            j[k, t] = jaccard(gt_mask, pred_mask, void_or_none)
            f[k, t] = boundary_f(gt_mask, pred_mask, bound_th, void_or_none)
    return SequenceScores(j=j, f=f)


def pck(
    pred_xy: np.ndarray,
    gt_xy: np.ndarray,
    visible: np.ndarray,
    alphas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    reference: str = "jhmdb",
) -> dict[str, float]:
    """Percentage of correct keypoints, in percent, for (N, K, 2) predicted and true positions.

    A visible joint is correct when its distance to the truth is at most ``alpha`` times a
    reference size of that frame's visible ground-truth joints:

    - ``"jhmdb"``: 0.6 x the diagonal of their tight box (the JHMDB convention of CRW's
      ``eval_pck.py``, also used by Vondrick et al. and later trackers);
    - ``"box"``: the longer side of their tight box, a common normalisation for animal poses
      (BADJA's own protocol scales by the square root of the silhouette area instead; that
      needs masks and is not this).

    As in CRW, the score is averaged over the frames of each joint, then over joints; invisible
    ground-truth joints are skipped, and joints never visible do not enter the average. Pass only
    the frames to score (the first, given frame is usually left out).
    """
    if reference not in ("jhmdb", "box"):
        raise UsageError(f"PCK reference must be 'jhmdb' or 'box', got {reference!r}")
    pred_xy, gt_xy = np.asarray(pred_xy, np.float64), np.asarray(gt_xy, np.float64)
    visible = np.asarray(visible, dtype=bool)
    if pred_xy.shape != gt_xy.shape or gt_xy.ndim != 3 or gt_xy.shape[2] != 2:
        raise UsageError(f"keypoints must both be (N, K, 2), got {pred_xy.shape}, {gt_xy.shape}")
    if visible.shape != gt_xy.shape[:2]:
        raise UsageError(f"visibility must be (N, K) = {gt_xy.shape[:2]}, got {visible.shape}")
    has_joint = visible.any(axis=1)
    if not has_joint.any():
        raise ColortrackError("PCK: no visible ground-truth joint")
    hidden = ~visible[..., None]
    low = np.where(hidden, np.inf, gt_xy).min(axis=1)
    high = np.where(hidden, -np.inf, gt_xy).max(axis=1)
    sides = np.where(has_joint[:, None], high - low, np.nan)
    if reference == "jhmdb":
        size = 0.6 * np.hypot(sides[:, 0], sides[:, 1])
    else:
        size = sides.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm_dist = np.linalg.norm(pred_xy - gt_xy, axis=2) / size[:, None]
    counts = visible.sum(axis=0)
    scored = counts > 0
    result = {}
    for alpha in alphas:
        correct = ((norm_dist <= alpha) & visible).sum(axis=0)
        result[f"PCK@{alpha:g}"] = float(100.0 * np.mean(correct[scored] / counts[scored]))
    return result
