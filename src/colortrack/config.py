"""Typed configuration: the model, its training recipe, and label propagation, with named presets.

Library code takes these dataclasses, never an argparse namespace. `override` turns `key=value`
strings into a new config and refuses unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, TypeVar

from colortrack.bounds import PROPAGATION_LIMITS, TRAIN_LIMITS, check_ranges
from colortrack.errors import UsageError


def setting(default: Any, help: str) -> Any:
    """A config field with the one line that `--help` shows for it."""
    return field(default=default, metadata={"help": help})


STRIDE = 8  # the encoder's output stride: embeddings are at 1/8 of the input resolution
# One trunk stage: (channels, residual blocks, stride, dilation).
Stage = tuple[int, int, int, int]
INPUTS = ("L", "Lab")
# How tracking finds correspondences: the learned embedding, alone or with raw color, or a
# baseline (copy the first mask, optical flow, raw Lab pixels, an untrained encoder).
METHODS = ("model", "model+pixels", "identity", "flow", "pixels", "random")
# The best tracker measured (docs/results.md): the learned embedding with raw color beside it,
# 8.6 J&F above the embedding alone on davis2016-dev at nearly the same speed.
DEFAULT_METHOD = "model+pixels"


@dataclass(frozen=True)
class ModelConfig:
    """The encoder: a ResNet trunk at output stride 8, then a temporal 3D-conv head."""

    input: str = setting("L", "what the encoder sees: L (gray, the paper) or Lab (color; "
                         "training hides the chroma it must predict)")
    rescale_hidden: bool = setting(True, "Lab: rescale kept channels by 3 / (3 - hidden), as "
                                   "dropout does; false keeps L at its scale")
    stem_channels: int = setting(64, "channels of the first convolution")
    stages: tuple[Stage, ...] = setting(
        ((64, 2, 1, 1), (128, 2, 2, 1), (256, 2, 1, 2), (512, 2, 1, 4)),
        "trunk stages: (channels, residual blocks, stride, dilation) each")
    head_channels: int = setting(256, "channels of the temporal head")
    head_dilations: tuple[int, ...] = setting((1, 2, 4, 8, 16), "spatial dilations of the "
                                              "head's layers")
    temporal_kernel: int = setting(3, "frames each head layer sees; 1 = no mixing across frames")
    embed_dim: int = setting(64, "embedding channels")
    num_colors: int = setting(16, "k-means clusters of the ab plane (the color classes)")

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

    size: int = setting(256, "square crop side, in pixels")
    refs: int = setting(3, "reference frames per clip (plus one target)")
    fps: float = setting(6.0, "clips are sampled at this frame rate")
    max_gap: int = setting(1, "largest random frame skip, in frames at fps")
    batch: int = setting(32, "clips per step (over all processes)")
    lr: float = setting(1e-3, "Adam learning rate")
    lr_final: float = setting(1e-4, "learning rate from lr_drop_step on")
    lr_drop_step: int = setting(60_000, "step at which lr drops to lr_final")
    steps: int = setting(400_000, "training steps")
    temperature: float = setting(1.0, "softmax temperature of the training copy")
    normalize: bool = setting(False, "unit embeddings, as tracking uses (then temperature ~0.05)")
    radius: float = setting(0.0, "copy only from reference cells this close; 0 = whole frame")
    full_res_loss: bool = setting(False, "loss on predictions upsampled to the crop, not the "
                                  "1/8 grid")
    drop_both: float = setting(1 / 3, "Lab: chance a clip hides both chroma channels (else a "
                               "or b)")
    init: str = setting("", "model file to start from (an L model also starts a Lab one)")
    weight_decay: float = setting(0.0, "Adam weight decay")
    scale: tuple[float, float] = setting((0.5, 1.0), "random crop area, as a fraction of the "
                                         "frame: min,max")
    cache_short_side: int = setting(0, "> 0: decode each video once at this short side and "
                                    "sample from memory")
    workers: int = setting(2, "data loader processes")
    log_every: int = setting(10, "steps between log lines")
    checkpoint_every: int = setting(500, "steps between checkpoints")
    preview_every: int = setting(1000, "steps between colorization previews")
    seed: int = setting(0, "seed of the clip stream and the weights")
    kmeans_pixels: int = setting(200_000, "pixels sampled to fit the color clusters")
    holdout: tuple[str, ...] = setting((), "video names (stem or file) kept out for validation")
    val_clips: int = setting(64, "validation clips")
    val_every: int = setting(250, "steps between validations")
    demo_frames: int = setting(30, "frames of the bundled demo clip each checkpoint tracks, to "
                               "score the model against copying the first mask; 0 = off")
    tensorboard: bool = setting(False, "also log to RUN/tensorboard (extra: tensorboard)")

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
            ("demo_frames", self.demo_frames == 0 or self.demo_frames >= 3,
             "0 (off) or >= 3, as J&F scores frames 1 to T-2"),
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

    context: int = setting(7, "recent predicted frames copied from, besides the first")
    topk: int = setting(10, "references each location copies from (its k most similar)")
    radius: float = setting(12.0, "search radius in feature cells (8 px each); 0 = everywhere")
    global_first: bool = setting(False, "search the first frame everywhere (CRW), not within "
                                 "the radius")
    temperature: float = setting(0.05, "softmax temperature of the copy")
    color_temperature: float = setting(50.0, "raw Lab's temperature: method pixels, and the "
                                       "pixel half of model+pixels")
    normalize: bool = setting(True, "L2-normalise embeddings before the dot product")
    precision: str = setting("auto", "fp32, bf16, int8 or auto (int8 top-k choice on CPUs, bf16 "
                             "on GPUs); the chosen are scored in float32")

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
    """A named model and training recipe (tracking settings are the model's to choose)."""

    model: ModelConfig
    train: TrainConfig


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


def settings_help(title: str, *kinds: type) -> str:
    """What `--set KEY=VALUE` accepts for these configs, for a command's --help: one entry per
    key with its default (the `cpu` preset's for model and training keys) and type."""
    preset_values = {ModelConfig: PRESETS["cpu"].model, TrainConfig: PRESETS["cpu"].train}
    lines = [f"{title}:"]
    for kind in kinds:
        values = preset_values.get(kind) or kind()
        for f in dataclasses.fields(kind):
            value = getattr(values, f.name)
            if isinstance(value, tuple) and value and isinstance(value[0], tuple):
                continue  # nested tuples (stages) are set in a preset, not on the command line
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            head = f"  {f.name}={shown}"
            kind_name = str(f.type).split("[")[0]
            body = textwrap.wrap(f"({kind_name}) {f.metadata['help']}", 98 - 28)
            if len(head) > 26:
                lines.append(head)
                head = ""
            lines += [f"{head:<28}{line}" if i == 0 else f"{'':<30}{line}"
                      for i, line in enumerate(body)]
    return "\n".join(lines)


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
