"""Model files are checked against a schema before use: a config the tracker can run, weights of
the right kinds, values that can exist. A file that fails is one line, never a crash inside
tracking and never silently absurd results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from colortrack.cli import main
from colortrack.data.annotations import write_mask
from colortrack.model.checkpoint import default_model_path, load_model, save_model
from colortrack.model.network import Encoder
from tests.conftest import moving_texture, write_video

pytestmark = pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")


def tampered(path: Path, change) -> Path:
    """The shipped model with `change(tensors)` applied, its metadata kept."""
    with safe_open(str(default_model_path()), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(default_model_path()))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _set(name: str, value: float | torch.dtype):
    def change(tensors: dict[str, torch.Tensor]) -> None:
        if isinstance(value, torch.dtype):
            tensors[name] = tensors[name].to(value)
        else:
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[0] = value

    return change


CASES = [
    (_set("trunk.stem.1.running_var", -1.0), "trunk.stem.1.running_var is negative"),
    (_set("trunk.stem.1.num_batches_tracked", -5), "num_batches_tracked is negative"),
    (_set("trunk.stem.0.weight", 1e9), "trunk.stem.0.weight holds values beyond 1e+06"),
    (_set("centroids", 5000.0), "outside Lab's ab range"),
    (_set("trunk.stem.1.num_batches_tracked", torch.float32), "is torch.float32, not torch.int64"),
    (_set("trunk.stem.0.weight", torch.int32), "is torch.int32, not torch.float32"),
    (_set("centroids", torch.int64), "centroids are torch.int64"),
]


@pytest.mark.parametrize(("change", "message"), CASES, ids=[c[1][:30] for c in CASES])
def test_absurd_weights_are_refused(capsys, tmp_path, change, message) -> None:
    path = tampered(tmp_path / "m.safetensors", change)
    assert main(["-q", "info", "--model", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: implausible weights (" in err and message in err


def _model_of(path: Path, **changes: object) -> Path:
    cfg = dataclasses.replace(load_model()[0].cfg, **changes)
    save_model(path, Encoder(cfg), torch.zeros(cfg.num_colors, 2))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"stages": ((32, 1, 1, 1), (64, 1, 1, 1), (96, 1, 1, 2))}, "multiply to 2"),
    ({"stages": ((32, 1, 2, 1), (64, 1, 2, 1), (96, 1, 1, 2))}, "multiply to 2"),
    ({"stages": ((32, 1, 3, 1), (64, 1, 1, 1), (96, 1, 1, 2))}, "must be 1 or 2"),
    ({"head_dilations": (1, 2, 128)}, "bad dilation 128"),
    ({"temporal_kernel": 17}, "bad temporal_kernel 17"),
])
def test_a_config_the_tracker_cannot_run_is_refused_before_tracking(capsys, tmp_path, changes,
                                                                     message) -> None:
    """Weights that match such a config loaded, then crashed inside propagation."""
    model = _model_of(tmp_path / "m.safetensors", **changes)
    video = write_video(tmp_path / "v.mp4", moving_texture(4, 64, 48), 10)
    ids = np.zeros((48, 64), np.uint8)
    ids[10:30, 10:30] = 1
    write_mask(tmp_path / "m.png", ids)
    code = main(["-q", "track", str(video), "--mask", str(tmp_path / "m.png"),
                 "--out", str(tmp_path / "o"), "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{model}: damaged model config (bad" in err and message in err
    assert not (tmp_path / "o").exists()
