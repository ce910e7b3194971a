"""Frames to features: the encoder streamed over a video, raw Lab pixels, or both.

Each kind yields one (D, h, w) feature map per frame at the encoder's stride, frame by frame,
so that memory never grows with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colortrack.color import hide_chroma, lightness, rgb_to_lab
from colortrack.config import PropagationConfig
from colortrack.model.device import encoder_dtype, torch_device
from colortrack.model.network import Encoder, fused_for_inference
from colortrack.stages import stage


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

class FrameEncoder:
    """Streams frames through the encoder: one trunk pass and one cached head step per frame."""

    def __init__(self, encoder: Encoder, device: str | torch.device = "cpu",
                 normalize: bool = True, precision: str = "fp32", gray: bool = False) -> None:
        self.device = torch_device(device)
        self.dtype = encoder_dtype(precision, self.device)
        # A copy in the encoder's dtype rather than autocast, which re-casts every weight at
        # every frame on CPUs.
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
        with stage("encode"):
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
