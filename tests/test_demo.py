"""The main job: `colortrack demo` on the bundled clip, offline, with the shipped model."""

import pytest

from colortrack.cli import main
from colortrack.demo import METHODS
from colortrack.eval.demo_clip import DemoClip
from colortrack.model.checkpoint import default_model_path
from colortrack.training.report import SHIPPED_DEMO_JF


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_demo_tracks_the_bundled_clip_and_beats_copying_the_first_mask(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in METHODS}
    assert set(rows) == {"model+pixels", "model", "flow", "identity"}
    assert float(rows["model"][0]) > float(rows["identity"][0])
    assert float(rows["model+pixels"][0]) > float(rows["identity"][0])
    # What training reports beside a run's own score: the shipped model's, and identity's.
    assert float(rows["model"][0]) == pytest.approx(SHIPPED_DEMO_JF, abs=0.051)
    assert float(rows["identity"][0]) == pytest.approx(DemoClip().identity, abs=0.051)
    for method in rows:
        assert len(list((out / method).glob("*.png"))) == 30
        assert (out / method / "overlay.mp4").is_file()
    assert (out / "demo.gif").stat().st_size > 0
    assert main(["-q", "demo", "--out", str(out)]) == 1  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
