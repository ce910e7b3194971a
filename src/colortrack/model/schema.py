"""What a model file must hold beyond matching shapes: a config the tracker can run, weights of
the right kinds, and statistics that can exist.

`load_model` checks types, ranges and shapes first; this adds what a shape check cannot see.
Every rule raises ValueError naming the field or tensor, which the loader reports as one line.
"""

from __future__ import annotations

import math

import torch

from colortrack.config import STRIDE, ModelConfig

MAX_DILATION = 64  # far past any preset (16); larger ones only pad zeros
MAX_TEMPORAL_KERNEL = 16  # frames a temporal convolution sees; presets use 1-3
MAX_WEIGHT = 1e6  # the shipped model's largest magnitude is about 78
AB_RANGE = 128.0  # Lab chroma lies within about [-128, 127]
_STEM_STRIDE = 4  # the stem's convolution and pooling each halve the frame


def check_config(cfg: ModelConfig) -> None:
    """Refuse configs whose network would not give embeddings at 1/STRIDE of the frame."""
    strides = [stage[2] for stage in cfg.stages]
    if any(s not in (1, 2) for s in strides) or _STEM_STRIDE * math.prod(strides) != STRIDE:
        raise ValueError(f"bad stages {cfg.stages}: stage strides must be 1 or 2 and multiply "
                         f"to {STRIDE // _STEM_STRIDE} (the tracker needs output stride {STRIDE})")
    dilations = [stage[3] for stage in cfg.stages] + list(cfg.head_dilations)
    if max(dilations) > MAX_DILATION:
        raise ValueError(f"bad dilation {max(dilations)} (at most {MAX_DILATION})")
    if cfg.temporal_kernel > MAX_TEMPORAL_KERNEL:
        raise ValueError(f"bad temporal_kernel {cfg.temporal_kernel} "
                         f"(at most {MAX_TEMPORAL_KERNEL})")


def check_weights(tensors: dict[str, torch.Tensor], expected: dict[str, torch.dtype],
                  centroids: torch.Tensor) -> None:
    """Refuse weights of the wrong kind or of impossible values (shapes and finiteness are
    checked already)."""
    for name, tensor in sorted(tensors.items()):
        if tensor.is_floating_point() != expected[name].is_floating_point:
            raise ValueError(f"{name} is {tensor.dtype}, not {expected[name]}")
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"{name} is {tensor.dtype}")
        if not tensor.is_floating_point():
            if tensor.numel() and tensor.min() < 0:
                raise ValueError(f"{name} is negative")
            continue
        if tensor.numel() and tensor.abs().max() > MAX_WEIGHT:
            raise ValueError(f"{name} holds values beyond {MAX_WEIGHT:g}")
        if name.endswith("running_var") and tensor.numel() and tensor.min() < 0:
            raise ValueError(f"{name} is negative (a variance cannot be)")
    if not centroids.is_floating_point():
        raise ValueError(f"the color centroids are {centroids.dtype}, not numbers with a fraction")
    if centroids.abs().max() > AB_RANGE:
        raise ValueError(f"the color centroids lie outside Lab's ab range (+-{AB_RANGE:g})")
