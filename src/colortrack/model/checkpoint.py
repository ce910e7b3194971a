"""Self-describing model files: safetensors weights + config + color centroids, loaded strictly;
and the training run's checkpoints (model, optimizer, state), written whole or not at all.

Loading never executes code: safetensors holds only tensors and a string->string metadata map.
The config in that map is checked field by field and the network is first built on the `meta`
device (no memory), so a damaged or tampered file is a ColortrackError, never a crash.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from colortrack.config import INPUTS, ModelConfig, TrainConfig, from_dict, to_dict
from colortrack.data.files import atomic_path, atomic_write_bytes, reason
from colortrack.errors import ColortrackError
from colortrack.model.network import Encoder, gflops_per_frame
from colortrack.model.schema import check_config, check_weights

FORMAT = "colortrack-model/1"
KEEP_CHECKPOINTS = 2


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("colortrack") / "assets" / "model.safetensors"))


def save_model(path: str | Path, encoder: Encoder, centroids: torch.Tensor, **info: object) -> None:
    """Write weights, centroids and config (plus free-form `info`, e.g. step) atomically.

    Non-finite weights (a diverged run) are refused, so a saved model is always a usable one.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    if not all(v.isfinite().all() for v in tensors.values() if v.is_floating_point()):
        raise ColortrackError(f"{path}: the weights hold NaN or inf (training diverged); not saved")
    tensors["centroids"] = centroids.detach().cpu().float().contiguous()
    metadata = {"format": FORMAT, "model_config": json.dumps(to_dict(encoder.cfg)),
                "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as error:  # how safetensors reports a full disk
            raise OSError(errno.EIO, str(error)) from None


def resolve(path: str | Path | None) -> Path:
    """A model file, a run folder (its model.safetensors) or None (the shipped model)."""
    if path is None:
        path = default_model_path()
        if not path.is_file():
            raise ColortrackError(f"{path}: the shipped model is missing; reinstall colortrack "
                                  "or pass --model PATH")
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ColortrackError(f"{path}: model file not found")
    return path


def _like(value: Any, default: Any, inner: bool = False) -> bool:
    """Whether a config value has its default's type: a positive int of sane size, or a tuple
    of them (1-64 items; a stage tuple inside `stages` has exactly its default's length)."""
    if isinstance(default, str | bool):
        return type(value) is type(default)
    if isinstance(default, tuple):
        if not isinstance(value, tuple):
            return False
        size = len(value) == len(default) if inner else 0 < len(value) <= 64
        return size and all(_like(v, default[0], inner=True) for v in value)
    return type(value) is type(default) and 0 < value <= 4096


def _model_config(data: Any) -> ModelConfig:
    """The ModelConfig of a file's metadata; ValueError names the first bad field."""
    if not isinstance(data, dict):
        raise ValueError("model_config is not a JSON object")
    if data.get("input", "L") not in INPUTS:  # files from before `input` are gray models
        raise ValueError(f"bad input {data['input']!r}")
    cfg, defaults = from_dict(ModelConfig, data), ModelConfig()
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if not _like(value, getattr(defaults, field.name)):
            raise ValueError(f"bad {field.name} {value!r}")
    check_config(cfg)
    return cfg


def load_model(path: str | Path | None = None) -> tuple[Encoder, torch.Tensor, dict]:
    """Rebuild (encoder in eval mode, centroids, info) from a file; any mismatch is an error."""
    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ColortrackError(f"{path}: not a readable safetensors model ({error})") from None
    if metadata.get("format") != FORMAT:
        raise ColortrackError(f"{path}: not a colortrack model (format {metadata.get('format')!r})")
    try:
        cfg = _model_config(json.loads(metadata["model_config"]))
        info = json.loads(metadata.get("info", "{}"))
        if not isinstance(info, dict):
            raise ValueError("info is not a JSON object")
        with torch.device("meta"):  # the shapes the config implies, without allocating them
            reference = Encoder(cfg).state_dict()
        expected = {k: v.shape for k, v in reference.items()}
    except (KeyError, ValueError, TypeError, RecursionError) as error:
        raise ColortrackError(f"{path}: damaged model config ({error})") from None
    centroids = tensors.pop("centroids", None)
    if centroids is None or centroids.shape != (cfg.num_colors, 2):
        raise ColortrackError(f"{path}: missing or malformed color centroids")
    for name in sorted(set(expected) | set(tensors)):
        if name not in tensors or name not in expected or tensors[name].shape != expected[name]:
            raise ColortrackError(f"{path}: weights do not match the model config (at {name})")
    if not all(v.isfinite().all() for v in [centroids, *tensors.values()] if v.is_floating_point()):
        raise ColortrackError(f"{path}: the weights hold NaN or inf")
    try:
        check_weights(tensors, {k: v.dtype for k, v in reference.items()}, centroids)
    except ValueError as error:
        raise ColortrackError(f"{path}: implausible weights ({error})") from None
    encoder = Encoder(cfg)
    try:
        encoder.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ColortrackError(f"{path}: weights do not match the model config ({first})") from None
    return encoder.eval(), centroids, info


def read_state(folder: Path) -> dict:
    """A training checkpoint's state.json, checked enough that resuming cannot crash on it."""
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
        valid = isinstance(state, dict) and type(state.get("step")) is int and state["step"] >= 0
        if not valid or not isinstance(state.get("model_config"), dict):
            raise ValueError("no step or model_config")
        from_dict(TrainConfig, state["train_config"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ColortrackError(f"{path}: damaged checkpoint state ({error})") from None
    return state


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore Adam's moments saved by the training run, refusing any that do not fit."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ColortrackError(f"{path}: not a readable optimizer state ({error})") from None
    opt = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        fits = index.isdigit() and int(index) < len(params)
        if not fits or (value.dim() > 0 and value.shape != params[int(index)].shape):
            raise ColortrackError(f"{path}: optimizer state {key} does not fit the model")
        opt["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt)


class Checkpoints:
    """ckpt-<step>/ folders written under a temporary name, then renamed; `latest` points.

    A run killed at any moment (SIGKILL included) leaves `latest` naming a complete folder.
    """

    def __init__(self, out: Path) -> None:
        self.out = out

    def latest(self) -> Path | None:
        pointer = self.out / "latest"
        if not pointer.is_file():
            return None
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, ValueError) as error:
            raise ColortrackError(f"{pointer}: damaged checkpoint pointer ({error})") from None
        if not re.fullmatch(r"ckpt-\d{8}", name):
            raise ColortrackError(f"{pointer}: damaged checkpoint pointer (it names {name[:40]!r}, "
                                  "not a ckpt-<step> folder)")
        folder = self.out / name
        if not (folder / "state.json").is_file():
            raise ColortrackError(f"{folder}: checkpoint named by {pointer} is incomplete")
        return folder

    def clean(self) -> None:
        """Remove what a killed run left half-written: the hidden temporary names it writes."""
        patterns = (".ckpt-*.tmp", ".model.safetensors.*", ".latest.*", ".metrics.csv.*",
                    "previews/.*.png.*")  # fmt: skip
        for path in (p for pattern in patterns for p in self.out.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def save(self, encoder: Encoder, centroids: torch.Tensor, optimizer: torch.optim.Optimizer,
             state: dict) -> None:
        name = f"ckpt-{state['step']:08d}"
        if not all(p.isfinite().all() for p in encoder.parameters()):
            raise ColortrackError(f"weights became NaN or inf by step {state['step']}; stopped. "
                                  f"The last good checkpoint is kept in {self.out}")
        tmp = self.out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            save_model(tmp / "model.safetensors", encoder, centroids, step=state["step"])
            opt = optimizer.state_dict()
            tensors = {f"{i}.{k}": v.contiguous() for i, s in opt["state"].items()
                       for k, v in s.items() if torch.is_tensor(v)}
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
            shutil.rmtree(self.out / name, ignore_errors=True)
            os.replace(tmp, self.out / name)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError | SafetensorError | ColortrackError):  # a full disk
                why = (str(error).replace(str(tmp), str(self.out / name))
                       if isinstance(error, ColortrackError)
                       else f"{self.out / name}: cannot write ({reason(error)})")
                raise ColortrackError(f"{why}; the last complete checkpoint is kept in "
                                      f"{self.out}") from None
            raise
        atomic_write_bytes(self.out / "latest", name.encode())
        with atomic_path(self.out / "model.safetensors") as model:
            shutil.copyfile(self.out / name / "model.safetensors", model)
        for old in sorted(self.out.glob("ckpt-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old)


def describe(preset: str | None = None, model_path: str | None = None) -> str:
    """A short report of a preset's or a model file's encoder: size and cost per 480p frame."""
    from colortrack.config import PRESETS
    from colortrack.config import preset as get_preset

    if model_path is not None:
        encoder, _, info = load_model(model_path)
        rows = [(str(model_path), encoder, info)]
    else:
        names = [preset] if preset else list(PRESETS)
        rows = [(n, Encoder(get_preset(n).model), {}) for n in names]
    width = max(24, *(len(name) for name, _, _ in rows))
    lines = [f"{'encoder':<{width}} {'params (M)':>10} {'GFLOPs/480p frame':>18}  notes"]
    for name, encoder, info in rows:
        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        note = ", ".join(f"{k}={v}" for k, v in info.items())
        gflops = gflops_per_frame(encoder.eval())
        lines.append(f"{name:<{width}} {params:>10.2f} {gflops:>18.2f}  {note}")
    return "\n".join(lines)
