"""Self-describing model files: safetensors weights + config + color centroids, loaded strictly.

Loading never executes code: safetensors holds only tensors and a string->string metadata map.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from colortrack.config import ModelConfig, from_dict, to_dict
from colortrack.errors import ColortrackError
from colortrack.io_utils import atomic_path
from colortrack.model import Encoder

FORMAT = "colortrack-model/1"


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("colortrack") / "assets" / "model.safetensors"))


def save_model(path: str | Path, encoder: Encoder, centroids: torch.Tensor, **info: object) -> None:
    """Write weights, centroids and config (plus free-form `info`, e.g. step) atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    tensors["centroids"] = centroids.detach().cpu().float().contiguous()
    metadata = {"format": FORMAT, "model_config": json.dumps(to_dict(encoder.cfg)),
                "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


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
        cfg = from_dict(ModelConfig, json.loads(metadata["model_config"]))
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, ValueError, TypeError) as error:
        raise ColortrackError(f"{path}: damaged model config ({error})") from None
    centroids = tensors.pop("centroids", None)
    if centroids is None or centroids.shape != (cfg.num_colors, 2):
        raise ColortrackError(f"{path}: missing or malformed color centroids")
    encoder = Encoder(cfg)
    try:
        encoder.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ColortrackError(f"{path}: weights do not match the model config ({first})") from None
    return encoder.eval(), centroids, info
