"""`colortrack analyze` on a tiny DAVIS layout: the report, its numbers, offline."""

import re

import numpy as np
import pytest

from colortrack.analysis import analyze, by_attribute, read_attributes, score_predictions
from colortrack.cli import main

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
    assert "Pearson r" in text and re.search(r"mean\s+75\.0\s+100\.0", text)
    assert html.count("data:image/png;base64") == 3  # over time, attributes, colorization
    assert html.count("data:image/jpeg;base64") == 6  # 3 worst frames of each sequence
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched when opened
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "report.html", "over_time.png", "attributes.png", "colorization.png"}
    assert main(["analyze", str(lossy), "--root", str(root), "--out",
                 str(tmp_path / "report"), "--no-colorize"]) == 1  # not over it unasked


def test_colorization_accuracy_is_a_percentage(predictions):
    from colortrack.analysis import colorization_accuracy

    value = colorization_accuracy(predictions[0], "multi")
    assert 0 <= value <= 100 and np.isfinite(value)
