"""Typed configuration: the model, its training recipe, and label propagation, with named presets.

Library code takes these dataclasses, never an argparse namespace. `override` turns `key=value`
strings into a new config and refuses unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from colortrack.bounds import PROPAGATION_LIMITS, TRAIN_LIMITS, check_ranges
from colortrack.errors import UsageError

STRIDE = 8  # the encoder's output stride: embeddings are at 1/8 of the input resolution
# One trunk stage: (channels, residual blocks, stride, dilation).
Stage = tuple[int, int, int, int]
INPUTS = ("L", "Lab")


@dataclass(frozen=True)
class ModelConfig:
    """The encoder: a ResNet trunk at output stride 8, then a temporal 3D-conv head."""

    # What the encoder sees: "L" (gray, the paper) or "Lab" (color; training hides the chroma
    # it must predict, MAST-style, so copying stays the only way to it).
    input: str = "L"
    # Lab only: hidden chroma is zeroed and the kept channels rescaled by 3 / (3 - hidden), as
    # dropout does (MAST); False zeroes it and keeps L at its scale (a gray model's weights
    # then see the L they learned from).
    rescale_hidden: bool = True
    stem_channels: int = 64
    stages: tuple[Stage, ...] = ((64, 2, 1, 1), (128, 2, 2, 1), (256, 2, 1, 2), (512, 2, 1, 4))
    head_channels: int = 256
    head_dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    temporal_kernel: int = 3  # 1 makes the head purely spatial: no mixing across frames
    embed_dim: int = 64
    num_colors: int = 16

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise UsageError(f"input={self.input!r} (must be one of {', '.join(INPUTS)})")

    @property
    def in_channels(self) -> int:
        return len(self.input)


@dataclass(frozen=True)
class TrainConfig:
    """How to learn by colorization: clips of `refs` color frames + 1 target whose colors
    are hidden."""

    size: int = 256  # square crop side, in pixels
    refs: int = 3
    fps: float = 6.0  # clips are sampled at this frame rate
    max_gap: int = 1  # extra random frame skip, in frames at `fps`
    batch: int = 32
    lr: float = 1e-3
    lr_final: float = 1e-4
    lr_drop_step: int = 60_000
    steps: int = 400_000
    temperature: float = 1.0
    # Training as tracking runs: unit embeddings (then temperature ~0.05, as CRW), copies
    # restricted to `radius` feature cells (0 = the whole frame), and the loss on predictions
    # upsampled to the crop (not on the 1/8 grid).
    normalize: bool = False
    radius: float = 0.0
    full_res_loss: bool = False
    # Lab input only: per clip, the chance that both chroma channels are hidden (else a or b,
    # at even odds); the hidden ones are zeroed in every frame and the rest rescaled.
    drop_both: float = 1 / 3
    init: str = ""  # a model file to start from (an L model's weights also start a Lab one)
    weight_decay: float = 0.0
    scale: tuple[float, float] = (0.5, 1.0)  # random crop area fraction
    cache_short_side: int = 0  # >0: decode each video once at this size and sample from memory
    workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 500
    preview_every: int = 1000
    seed: int = 0
    kmeans_pixels: int = 200_000
    holdout: tuple[str, ...] = ()  # video names (stem or file name) kept out for validation
    val_clips: int = 64
    val_every: int = 250
    tensorboard: bool = False  # also log to RUN/tensorboard (pip install colortrack[tensorboard])

    def __post_init__(self) -> None:
        """Refuse recipes that would fail deep inside training or train on nothing."""
        problems = []
        if self.batch < 1 or self.steps < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"batch and steps must be >= 1 and lr > 0, got {self.batch}, "
                            f"{self.steps}, {self.lr}")
        if self.size < STRIDE or self.size % STRIDE:
            problems.append(f"size={self.size} (must be a multiple of the encoder's stride, "
                            f"{STRIDE})")
        lo, hi = (self.scale + (0.0, 0.0))[:2]
        rules = [  # (setting, whether its value is usable, what it must be)
            ("refs", self.refs >= 1, ">= 1"),
            ("max_gap", self.max_gap >= 1, ">= 1"),
            ("scale", len(self.scale) == 2 and 0 < lo <= hi <= 1,
             "two area fractions, 0 < min <= max <= 1"),
            ("temperature", math.isfinite(self.temperature) and self.temperature > 0, "> 0"),
            ("radius", math.isfinite(self.radius) and self.radius >= 0, ">= 0, 0 = off"),
            ("drop_both", 0 <= self.drop_both <= 1, "a probability, 0-1"),
            ("lr_final", math.isfinite(self.lr_final) and self.lr_final > 0, "> 0"),
            ("lr_drop_step", self.lr_drop_step >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("cache_short_side", self.cache_short_side >= 0, ">= 0, 0 = off"),
            ("workers", self.workers >= 0, ">= 0"),
            ("kmeans_pixels", self.kmeans_pixels >= 1, ">= 1"),
            ("val_clips", self.val_clips >= 1, ">= 1"),
            *((k, getattr(self, k) >= 1, ">= 1")
              for k in ("log_every", "val_every", "checkpoint_every", "preview_every")),
        ]
        problems += [f"{name}={getattr(self, name)} (must be {rule})"
                     for name, ok, rule in rules if not ok]
        if problems:
            raise UsageError(f"bad training setting: {'; '.join(problems)}")
        check_ranges(self, TRAIN_LIMITS, "training")


@dataclass(frozen=True)
class PropagationConfig:
    """Label propagation with the copy operator (the CRW / DINO protocol)."""

    context: int = 7  # previous predicted frames kept besides the first frame (DINO, UVC: 7)
    topk: int = 10
    radius: float = 12.0  # in feature cells, for every frame searched; 0 = no restriction
    global_first: bool = False  # True: search the first frame everywhere (CRW), not in the radius
    temperature: float = 0.05
    # Raw Lab's temperature, for `pixels` and the pixel half of `model+pixels` (whose scores
    # are f_i.f_j / temperature - |p_i - p_j|^2 / (2 color_temperature)).
    color_temperature: float = 50.0
    normalize: bool = True  # L2-normalise embeddings before the dot product
    # Encoder and window products: fp32; bf16; int8 (CPU: bf16 encoder where native, int8
    # products); auto (int8 products on CPUs, bf16 on GPUs; bf16 encoder where native). Lower-
    # precision products only choose each location's top-k; the chosen are scored in float32.
    precision: str = "auto"

    def __post_init__(self) -> None:
        """Refuse values that would fail deep inside the copy step or silently give NaNs."""
        problems = []
        if self.context < 0:
            problems.append(f"context={self.context} (must be >= 0)")
        if self.topk is not None and self.topk < 1:
            problems.append(f"topk={self.topk} (must be >= 1)")
        if not (math.isfinite(self.radius) and self.radius >= 0):
            problems.append(f"radius={self.radius} (must be >= 0; 0 searches everywhere)")
        for name in ("temperature", "color_temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name}={value} (must be > 0)")
        if problems:
            raise UsageError(f"bad propagation setting: {', '.join(problems)}")
        check_ranges(self, PROPAGATION_LIMITS, "propagation")


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig
    propagation: PropagationConfig = field(default_factory=PropagationConfig)


PRESETS: dict[str, Preset] = {
    # Faithful to the paper: full ResNet-18, 256x256, 3 refs + 1 target, batch 32, 400k steps.
    "paper": Preset(model=ModelConfig(), train=TrainConfig()),
    # Small enough to train on 2 CPU cores in hours and to track 480p video at interactive speed.
    "cpu": Preset(
        model=ModelConfig(
            stem_channels=24,
            stages=((32, 1, 1, 1), (64, 1, 2, 1), (96, 1, 1, 2)),
            head_channels=96,
            head_dilations=(1, 2, 4),
            temporal_kernel=3,
            embed_dim=64,
        ),
        train=TrainConfig(
            size=128,
            batch=16,
            lr=1e-3,
            lr_final=1e-4,
            lr_drop_step=6_000,
            steps=8_000,
            cache_short_side=160,
            max_gap=2,
            checkpoint_every=250,
            preview_every=500,
        ),
    ),
}

C = TypeVar("C")


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _coerce(value: str, current: Any, key: str) -> Any:
    """Parse `value` to the type of `current`, so `lr=abc` fails instead of becoming a string."""
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
            if current and isinstance(current[0], tuple):
                raise ValueError("nested tuples cannot be overridden from the command line")
            kind = type(current[0]) if current else str
            return tuple(kind(p) for p in parts)
        return value
    except ValueError:
        expected = type(current).__name__
        raise UsageError(f"bad value for {key}: {value!r} (expected {expected})") from None


def override(cfg: C, pairs: list[str]) -> C:
    """Return `cfg` with `key=value` overrides applied; unknown keys and bad types raise."""
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise UsageError(f"unknown setting {pair!r}; known: {', '.join(sorted(names))}")
        changes[key] = _coerce(value.strip(), getattr(cfg, key), key)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(kind: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config from JSON, turning lists back into tuples and refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return kind(**{k: tup(v) for k, v in data.items()})
