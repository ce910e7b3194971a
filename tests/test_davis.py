"""DavisDataset and evaluate_davis on a tiny DAVIS layout, and on the real dev set when present."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from colortrack.data.annotations import write_mask
from colortrack.data.davis import GLOBAL_COLUMNS, DavisDataset, evaluate_davis
from colortrack.errors import ColortrackError
from tests.conftest import data_root

FRAMES = 5
H, W = 32, 48


def two_objects(t: int) -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.uint8)
    cv2.rectangle(ids, (4 + t, 4), (16 + t, 20), 1, -1)
    cv2.circle(ids, (34, 16 + t), 7, 2, -1)
    return ids


def one_object(t: int) -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.uint8)
    cv2.circle(ids, (20 + t, 14), 9, 1, -1)
    return ids


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    """A DAVIS-2017-style root: 'multi' (palette, 2 objects), 'single' (binary 0/255)."""
    root = tmp_path / "DAVIS"
    for sequence, make in (("multi", two_objects), ("single", one_object)):
        frames = root / "JPEGImages" / "480p" / sequence
        masks = root / "Annotations" / "480p" / sequence
        frames.mkdir(parents=True)
        masks.mkdir(parents=True)
        for t in range(FRAMES):
            ids = make(t)
            Image.fromarray(np.full((H, W, 3), 40 * t, np.uint8)).save(frames / f"{t:05d}.jpg")
            if sequence == "multi":
                write_mask(masks / f"{t:05d}.png", ids)
            else:
                Image.fromarray(ids * 255).save(masks / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("single\nmulti\n")
    return root


def write_predictions(root: Path, out: Path, change=None) -> Path:
    """Predictions = ground truth (optionally changed), all frames, as palette PNGs."""
    dataset = DavisDataset(root)
    for sequence in dataset.sequences:
        (out / sequence).mkdir(parents=True)
        for path, ids in zip(dataset.mask_paths(sequence), dataset.masks(sequence), strict=True):
            write_mask(out / sequence / path.name, change(ids) if change else ids)
    return out


def test_dataset_reads_layout(davis: Path) -> None:
    dataset = DavisDataset(davis)
    assert dataset.sequences == ["single", "multi"]
    assert [p.name for p in dataset.frame_paths("multi")] == [f"{t:05d}.jpg" for t in range(5)]
    assert len(dataset.mask_paths("single")) == FRAMES
    np.testing.assert_array_equal(dataset.first_mask("multi"), two_objects(0))
    masks = dataset.masks("single")
    assert masks.shape == (FRAMES, H, W) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[3], one_object(3))
    assert DavisDataset(davis, sequences=["multi"]).sequences == ["multi"]


def test_sequence_lists(davis: Path) -> None:
    shutil.rmtree(davis / "ImageSets")
    assert DavisDataset(davis).sequences == ["multi", "single"]
    (davis / "ImageSets" / "480p").mkdir(parents=True)
    (davis / "ImageSets" / "480p" / "val.txt").write_text(
        "/JPEGImages/480p/multi/00000.jpg /Annotations/480p/multi/00000.png\n"
        "/JPEGImages/480p/multi/00001.jpg /Annotations/480p/multi/00001.png\n"
    )
    assert DavisDataset(davis).sequences == ["multi"]
    (davis / "ImageSets" / "val.txt").write_text("single\n")
    assert DavisDataset(davis).sequences == ["single"]


def test_dataset_errors_name_the_path(davis: Path, tmp_path: Path) -> None:
    with pytest.raises(ColortrackError, match="nowhere"):
        DavisDataset(tmp_path / "nowhere")
    with pytest.raises(ColortrackError, match="1080p"):
        DavisDataset(davis, resolution="1080p")
    with pytest.raises(ColortrackError, match="ghost"):
        DavisDataset(davis, sequences=["ghost"])
    (davis / "ImageSets" / "2017" / "val.txt").write_text("multi\nghost\n")
    with pytest.raises(ColortrackError, match="ghost"):
        DavisDataset(davis)
    dataset = DavisDataset(davis, sequences=["multi"])
    shutil.rmtree(davis / "JPEGImages" / "480p" / "multi")
    with pytest.raises(ColortrackError, match="JPEGImages"):
        dataset.frame_paths("multi")
    for path in (davis / "Annotations" / "480p" / "multi").iterdir():
        path.unlink()
    with pytest.raises(ColortrackError, match="no annotation"):
        dataset.masks("multi")


def test_ground_truth_scores_100(davis: Path, tmp_path: Path) -> None:
    report = evaluate_davis(davis, write_predictions(davis, tmp_path / "pred"))
    result = report.to_json()
    for key in ("J&F", "J", "F", "J-Recall", "F-Recall"):
        assert result[key] == pytest.approx(100.0)
    assert result["J-Decay"] == result["F-Decay"] == 0.0
    assert result["sequences"]["multi"] == pytest.approx({"J": 100.0, "F": 100.0, "J&F": 100.0})
    table = report.format_table().splitlines()
    assert table[0].split() == ["Sequence", *GLOBAL_COLUMNS]
    assert [line.split()[0] for line in table[1:-1]] == ["Global", "single", "multi_1", "multi_2"]
    assert table[1].split()[1:] == ["100.0", "100.0", "100.0", "0.0", "100.0", "100.0", "0.0"]
    assert table[-1].startswith("(percent, 0-100")


def lose_object_2(ids: np.ndarray) -> np.ndarray:
    return np.where(ids == 2, 0, ids)


def test_lost_object_and_global_average(davis: Path, tmp_path: Path) -> None:
    predictions = write_predictions(davis, tmp_path / "pred", lose_object_2)
    report = evaluate_davis(davis, predictions)
    result = report.to_json()
    assert result["sequences"]["multi"] == pytest.approx({"J": 50.0, "F": 50.0, "J&F": 50.0})
    assert result["sequences"]["single"]["J&F"] == pytest.approx(100.0)
    # Official global: every object weighs the same (2 of 3 objects are perfect).
    assert result["J&F"] == pytest.approx(200 / 3)
    assert result["J-Recall"] == pytest.approx(200 / 3)
    assert [o.name for o in report.objects] == ["single", "multi_1", "multi_2"]
    assert report.scores["multi"].j.shape == (2, FRAMES - 2)


def test_prediction_errors(davis: Path, tmp_path: Path) -> None:
    predictions = write_predictions(davis, tmp_path / "pred")
    for t in (0, FRAMES - 1):  # first and last frames are not scored, so not needed
        (predictions / "multi" / f"{t:05d}.png").unlink()
    evaluate_davis(davis, predictions)
    (predictions / "multi" / "00002.png").unlink()
    with pytest.raises(ColortrackError, match=r"multi/00002\.png"):
        evaluate_davis(davis, predictions)
    write_mask(predictions / "multi" / "00002.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(ColortrackError, match="49x32"):
        evaluate_davis(davis, predictions)
    write_mask(predictions / "multi" / "00002.png", np.full((H, W), 3, np.uint8))
    with pytest.raises(ColortrackError, match="object id 3"):
        evaluate_davis(davis, predictions)
    with pytest.raises(ColortrackError, match="predictions folder"):
        evaluate_davis(davis, tmp_path / "missing")


def test_real_davis2016_dev() -> None:
    root = data_root() / "davis2016-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    dataset = DavisDataset(root)
    assert len(dataset.sequences) == 10 and "blackswan" in dataset.sequences
    first = dataset.first_mask("blackswan")
    assert first.shape == (480, 854) and set(np.unique(first)) == {0, 1}
    assert len(dataset.frame_paths("blackswan")) == len(dataset.mask_paths("blackswan"))
    annotations = root / "Annotations" / "480p"
    report = evaluate_davis(root, annotations, sequences=["blackswan"])
    assert report.to_json()["J&F"] == pytest.approx(100.0)
