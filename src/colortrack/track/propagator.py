"""The learned tracker: embed each frame, then copy labels from the first frame and recent frames.

This is the colorization model's copy operator pointed at labels instead of colors. Memory is
bounded by the context (first frame + `context` recent frames), never by the video's length.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from colortrack.color import hide_chroma, lightness, rgb_to_lab
from colortrack.config import PropagationConfig
from colortrack.copy.context import Context
from colortrack.copy.propagate import propagate
from colortrack.errors import UsageError
from colortrack.model.checkpoint import load_model
from colortrack.model.network import Encoder, fused_for_inference


def pad_to_stride(x: torch.Tensor, stride: int = Encoder.stride) -> torch.Tensor:
    """(N, C, H, W) edge-padded at the bottom and right to a multiple of `stride`, so every
    feature cell covers whole pixels and no frame edge is cut."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % stride, 0, -h % stride), mode="replicate")


def padded_lab(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H', W') Lab, edge-padded to a multiple of the stride."""
    rgb = torch.tensor(frame, device=device).permute(2, 0, 1).float().div_(255)
    return pad_to_stride(rgb_to_lab(rgb[None]))


def fast_lab(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) Lab for tracking: L exactly as `lightness` (and
    `rgb_to_lab`), ab from OpenCV's float conversion, within 0.5 of `rgb_to_lab`'s (on a DAVIS
    frame) in 2 ms at 480p against its 68."""
    ab = cv2.cvtColor(np.float32(frame) / 255, cv2.COLOR_RGB2Lab)[..., 1:]
    return torch.cat([lightness(frame)[None], torch.from_numpy(ab).permute(2, 0, 1)])


PRECISIONS = ("auto", "fp32", "bf16", "int8")


def torch_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device this machine can run, or a UsageError saying why not (before
    anything is loaded or written, rather than PyTorch's traceback at the first tensor)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {str(name)!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UsageError(f"device {str(name)!r}: {why} (torch {torch.__version__}); "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {str(name)!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"device {str(name)!r} is not supported; use cpu, cuda or cuda:N")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs); where
    they are emulated they are slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def native_int8() -> bool:
    """Whether this PyTorch multiplies int8 matrices on the CPU (torch._int_mm, 2.2 and later)."""
    try:
        torch._int_mm(torch.ones(1, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
    except (AttributeError, RuntimeError):
        return False
    return True


def encoder_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The encoder's arithmetic. bf16 halves its time on CPUs that have it; its embeddings keep
    a cosine similarity above 0.9998 to float32's and are cast back to float32 before any copy."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision in ("auto", "int8") and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


# |mean unit embedding| of a first frame above which its embeddings are nearly parallel (mean
# cosine similarity above 0.81): int8 keys, quantized in steps of each channel's spread, then
# rank too coarsely (an untrained encoder: 0.999, DAVIS dog 44.0 J&F against bf16's 60.9);
# trained models give 0.40-0.56 on DAVIS first frames.
PARALLEL = 0.9


def choice_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The arithmetic of the window products, which only choose each location's top-k (the
    chosen are scored in float32). On CPUs int8 products (int32 sums) run about 2x bf16's and
    choose nearly as well: 98.4% of float32's top-10 picks against bf16's 98.6% (every location
    of DAVIS dog's frame 13, the shipped model). On GPUs bf16."""
    if precision == "int8" and device.type != "cpu":
        raise UsageError(f"precision=int8 computes on CPUs only; use auto or bf16 on {device}")
    if precision == "int8" and not native_int8():
        raise UsageError(f"precision=int8 needs torch._int_mm on the CPU (PyTorch 2.2 or "
                         f"later; this is {torch.__version__}); use auto, bf16 or fp32")
    if precision == "int8" or (precision == "auto" and device.type == "cpu" and native_int8()):
        return torch.int8
    return encoder_dtype(precision, device)


class FrameEncoder:
    """Streams frames through the encoder: one trunk pass and one cached head step per frame."""

    def __init__(self, encoder: Encoder, device: str | torch.device = "cpu",
                 normalize: bool = True, precision: str = "fp32", gray: bool = False) -> None:
        self.device = torch_device(device)
        self.dtype = encoder_dtype(precision, self.device)
        # A copy in the encoder's dtype rather than autocast: the same embeddings (bitwise, on
        # DAVIS dog), 10% faster on CPUs, where autocast re-casts every weight at every frame.
        self.encoder = fused_for_inference(encoder).to(self.device, self.dtype)
        self.normalize = normalize
        self.color = encoder.cfg.input == "Lab"
        self.gray = gray  # a color model then sees gray frames as training hid chroma
        self.rescale = encoder.cfg.rescale_hidden

    def image(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, C, H', W'), L or Lab as the encoder takes it (Lab with
        chroma hidden for `gray`), edge-padded to a multiple of the stride."""
        if not self.color:
            image = lightness(frame)[None]
        elif self.gray:
            image = hide_chroma(fast_lab(frame), torch.tensor([True, True]), self.rescale)
        else:
            image = fast_lab(frame)
        padded = pad_to_stride(image.to(self.device)[None])
        return padded.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def step(self, frame: np.ndarray, cache: list | None) -> tuple[torch.Tensor, list]:
        """Embed the next frame: (D, h, w), and the cache to pass with the frame after it."""
        with record_function("colortrack.encode"):
            features = self.encoder.features(self.image(frame))
            embedding, cache = self.encoder.head.step(features, cache)
            embedding = embedding[0].float()
            return (F.normalize(embedding, dim=0) if self.normalize else embedding), cache

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield (D, h, w) embeddings, exactly as the encoder computes them on the whole video."""
        cache = None
        for frame in frames:
            embedding, cache = self.step(frame, cache)
            yield embedding


class LabPixels:
    """The no-learning baseline: area-averaged Lab pixels at the encoder's stride as features.

    Used with the squared-distance affinity, s_ij = -|f_i - f_j|^2 / (2T) up to a per-query
    constant, i.e. the affinity exp(-|a - b|^2 / sigma) with sigma = 2T.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch_device(device)

    def features(self, frame: np.ndarray) -> torch.Tensor:
        return F.avg_pool2d(pad_to_stride(fast_lab(frame).to(self.device)[None]),
                            Encoder.stride)[0]

    @torch.inference_mode()
    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        for frame in frames:
            yield self.features(frame)


class ModelAndPixels:
    """The learned embedding and raw Lab pixels in one feature, [f, p * sqrt(T / T_color)]:
    under the squared-distance affinity at temperature T, its scores are f_i.f_j / T -
    |p_i - p_j|^2 / (2 T_color) plus a constant per query (f are unit vectors), the sum of the
    two affinities exactly as each is used alone."""

    def __init__(self, model: FrameEncoder, cfg: PropagationConfig) -> None:
        self.model, self.pixels = model, LabPixels(model.device)
        self.device, self.dtype = model.device, model.dtype
        self.weight = (cfg.temperature / cfg.color_temperature) ** 0.5

    @torch.inference_mode()
    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        cache = None
        for frame in frames:
            embedding, cache = self.model.step(frame, cache)
            yield torch.cat([embedding, self.pixels.features(frame).mul_(self.weight)])


def labels_to_grid(labels: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """(K, H, W) full-size soft labels -> (K, h, w) at feature resolution (area average)."""
    x = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(device)[None]
    return F.avg_pool2d(pad_to_stride(x, stride), stride)[0]


def grid_to_labels(grid: torch.Tensor, stride: int, height: int, width: int) -> np.ndarray:
    """(K, h, w) -> (K, H, W): bilinear upsampling by the stride, cropped to the frame."""
    up = F.interpolate(grid[None], scale_factor=stride, mode="bilinear", align_corners=False)
    return up[0, :, :height, :width].cpu().numpy()


class LearnedPropagator:
    """Label propagation with the learned embedding (first frame + recent predictions).

    `metric` "dot" scores f_i . f_j (the model); "l2" scores -|f_i - f_j|^2 / 2 (raw pixels),
    computed as a dot product of [f_i, -|f_i|^2 / 2] with [f_j, 1]. `with_pixels` adds raw
    Lab's affinity to the model's (see ModelAndPixels).
    """

    name = "model"

    def __init__(self, encoder: Encoder | None, propagation: PropagationConfig | None = None,
                 device: str = "cpu", *, metric: str = "dot", with_pixels: bool = False) -> None:
        self.cfg = propagation or PropagationConfig()
        self.metric = "l2" if with_pixels else metric
        self.frames: FrameEncoder | LabPixels | ModelAndPixels = (
            LabPixels(device) if encoder is None
            else FrameEncoder(encoder, device, self.cfg.normalize, self.cfg.precision))
        if with_pixels and isinstance(self.frames, FrameEncoder):
            self.frames = ModelAndPixels(self.frames, self.cfg)
        self.embed_dim = encoder.cfg.embed_dim if encoder is not None else None
        # Learned embeddings are unit vectors: bf16 or int8 products rank them well enough to
        # choose the top-k, which are then scored in float32; with scaled pixels beside them too
        # (model+pixels on davis2016-dev: 67.83 J&F with int8 choice and in fp32, every sequence
        # within 0.3). Raw pixels alone (norms up to 1e4) are not.
        lower = encoder is not None and self.cfg.topk is not None
        self.scoring = (choice_dtype(self.cfg.precision, self.frames.device) if lower
                        else torch.float32)

    @classmethod
    def pixels(cls, propagation: PropagationConfig | None = None,
               device: str = "cpu") -> LearnedPropagator:
        """Raw Lab pixels as features: what the protocol gives without any learning, at the
        `color_temperature`."""
        cfg = propagation or PropagationConfig()
        cfg = dataclasses.replace(cfg, temperature=cfg.color_temperature)
        propagator = cls(None, cfg, device, metric="l2")
        propagator.name = "pixels"
        return propagator

    @classmethod
    def model_and_pixels(cls, path: str | Path | None = None,
                         propagation: PropagationConfig | None = None,
                         device: str = "cpu") -> LearnedPropagator:
        """The model's affinity plus raw Lab's, each at its own temperature."""
        encoder, _, _ = load_model(path)
        propagator = cls(encoder, propagation, device, with_pixels=True)
        propagator.name = "model+pixels"
        return propagator

    @classmethod
    def random(cls, propagation: PropagationConfig | None = None, device: str = "cpu",
               preset_name: str = "cpu", seed: int = 0) -> LearnedPropagator:
        """A randomly initialised encoder: what the architecture gives before training."""
        from colortrack.config import preset

        torch.manual_seed(seed)
        propagator = cls(Encoder(preset(preset_name).model), propagation, device)
        propagator.name = "random"
        return propagator

    def _key_query(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.metric == "dot":
            return f, f
        norm = f.pow(2).sum(0, keepdim=True)
        return torch.cat([f, -norm / 2]), torch.cat([f, torch.ones_like(norm)])

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None,
                        propagation: PropagationConfig | None = None,
                        device: str = "cpu") -> LearnedPropagator:
        encoder, _, _ = load_model(path)
        return cls(encoder, propagation, device)

    def _scoring(self, first: torch.Tensor) -> torch.dtype:
        """`scoring`, except int8 on nearly parallel embeddings (see PARALLEL): the encoder's
        dtype there (bf16 where native, which keeps their precision once centred)."""
        if self.scoring != torch.int8 or self.cfg.precision == "int8":
            return self.scoring
        spread = float(F.normalize(first[:self.embed_dim], dim=0).mean((1, 2)).norm())
        return self.frames.dtype if spread > PARALLEL else self.scoring

    @torch.inference_mode()
    def propagate(self, frames: Iterable[np.ndarray], first_labels: np.ndarray,
                  given: Mapping[int, np.ndarray] | None = None) -> Iterator[np.ndarray]:
        """Soft labels of frames 1, 2, ...; `given` labels of later frames replace their
        prediction and join the first frame as long-term references (Context.anchor)."""
        cfg, stride, given = self.cfg, Encoder.stride, given or {}
        height, width = first_labels.shape[-2:]
        context: Context | None = None
        for index, embedding in enumerate(self.frames.stream(frames)):
            key, query = self._key_query(embedding)
            if context is None:
                labels = labels_to_grid(first_labels, stride, embedding.device)
                context = Context(key, labels, recent=cfg.context, radius=cfg.radius,
                                  global_first=cfg.global_first, scoring=self._scoring(key),
                                  anchors=len(given))
            elif index in given:
                context.anchor(key, labels_to_grid(given[index], stride, embedding.device))
                yield np.asarray(given[index], dtype=np.float32)
            else:
                with record_function("colortrack.copy"):
                    grid = propagate(query, context, temperature=cfg.temperature, topk=cfg.topk)
                    context.append(key, grid)
                with record_function("colortrack.upsample"):
                    labels = grid_to_labels(grid, stride, height, width)
                yield labels
