"""`colortrack analyze` on a tiny DAVIS layout: the report, its numbers, offline."""

import re

import numpy as np
import pytest

from colortrack.cli import main
from colortrack.data.outputs import MANIFEST
from colortrack.eval.analysis import analyze, by_attribute, read_attributes, score_predictions

from .test_davis import davis, lose_object_2, write_predictions  # noqa: F401 (fixture)

pytest.importorskip("matplotlib")


@pytest.fixture
def predictions(davis, tmp_path):  # noqa: F811
    (davis / "db_info.yml").write_text(
        "attributes: [FM, OCC]\nsets: [test]\nsequences:\n"
        "- {name: multi, attributes: [FM, OCC], num_frames: 6, set: test}\n"
        "- {name: single, attributes: [FM], num_frames: 6, set: test}\n")
    exact = write_predictions(davis, tmp_path / "exact")
    lossy = write_predictions(davis, tmp_path / "lossy", lose_object_2)
    return davis, exact, lossy


def test_scores_per_frame_and_by_attribute(predictions):
    root, exact, lossy = predictions
    a, b = score_predictions(root, exact), score_predictions(root, lossy)
    assert a.mean("multi") == 100 and abs(b.mean("multi") - 50) < 1e-6
    table = by_attribute([a, b], read_attributes(root))
    assert table["OCC"] == {"exact": 100, "lossy": pytest.approx(50), "sequences": 1}
    assert table["FM"]["lossy"] == pytest.approx(75) and table["FM"]["sequences"] == 2


def test_report_is_written_whole_and_offline(predictions, tmp_path):
    root, exact, lossy = predictions
    text = analyze(root, [lossy, exact], tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert re.search(r"mean\s+75\.0\s+100\.0", text)
    assert "no correlation over 2 sequences; it needs 3 or more" in text
    words = re.sub(r"base64,[^\"]+", "", html)  # the page without its images
    assert "nan" not in text.lower() and "nan" not in words.lower()
    assert html.count("data:image/png;base64") == 3  # over time, attributes, colorization
    assert html.count("data:image/jpeg;base64") == 6  # 3 worst frames of each sequence
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched when opened
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "report.html", "over_time.png", "attributes.png", "colorization.png", MANIFEST}
    assert main(["analyze", str(lossy), "--root", str(root), "--out",
                 str(tmp_path / "report"), "--no-colorize"]) == 1  # not over it unasked


def test_correlation_needs_three_sequences_that_vary():
    from colortrack.eval.analysis import correlation

    assert correlation([1, 2, 3], [2, 4, 7])[0] == pytest.approx(0.9934, abs=1e-4)
    assert correlation([1, 2], [2, 4]) == (None, "no correlation over 2 sequences; it needs 3 "
                                                 "or more")
    assert correlation([1, 1, 1], [2, 4, 7])[0] is None


def test_colorization_accuracy_is_a_percentage(predictions):
    from colortrack.eval.analysis import colorization_accuracy

    value = colorization_accuracy(predictions[0], "multi")
    assert 0 <= value <= 100 and np.isfinite(value)


def test_keypoint_accuracy_by_distance_from_the_annotated_frame(davis, tmp_path):  # noqa: F811
    import json

    from colortrack.data.badja import BADJA_JOINT_INDICES, BADJA_JOINTS
    from colortrack.data.keypoints import write_track_json
    from colortrack.eval.analysis import pck_by_distance

    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(100, 1000, 37), rng.uniform(100, 1800, 37)  # at 1920x1080
    entries = [{"image_path": f"x/{t:05d}.jpg", "visibility": [1] * 37,
                "joints": [[r, c] for r, c in zip(rows, cols, strict=True)]} for t in (0, 2, 3)]
    (tmp_path / "badja" / "joint_annotations").mkdir(parents=True)
    (tmp_path / "badja" / "joint_annotations" / "single.json").write_text(json.dumps(entries))
    xy = np.stack([cols, rows], 1)[list(BADJA_JOINT_INDICES)] * [48 / 1920, 32 / 1080]
    near, far = xy.astype(np.float32), (xy + [0, 20]).astype(np.float32)
    track = [(t, near if t < 3 else far, np.ones(20, bool)) for t in range(5)]
    (tmp_path / "tracks" / "single").mkdir(parents=True)
    write_track_json(tmp_path / "tracks" / "single" / "points.json", BADJA_JOINTS, (), track)
    curve = pck_by_distance(tmp_path / "tracks", tmp_path / "badja", davis, bin_frames=2)
    assert curve == {2: 50.0}  # frame 2 exact, frame 3 far off; both 2-3 frames on
