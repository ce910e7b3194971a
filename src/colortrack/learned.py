"""The learned tracker: embed each frame, then copy labels from the first frame and recent frames.

This is the colorization model's copy operator pointed at labels instead of colors. Memory is
bounded by the context (first frame + `context` recent frames), never by the video's length.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colortrack.checkpoint import load_model
from colortrack.color import rgb_to_lab
from colortrack.config import PropagationConfig
from colortrack.model import Encoder
from colortrack.propagation import propagate


class FrameEncoder:
    """Streams frames through the encoder: one trunk pass and one cached head step per frame."""

    def __init__(self, encoder: Encoder, device: str | torch.device = "cpu",
                 normalize: bool = True) -> None:
        self.encoder = encoder.eval().to(device)
        self.device = torch.device(device)
        self.normalize = normalize

    def lightness(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 1, H', W') L, edge-padded to a multiple of the stride."""
        rgb = torch.from_numpy(frame).to(self.device).permute(2, 0, 1).float().div_(255)
        lightness = rgb_to_lab(rgb[None])[:, :1]
        s = Encoder.stride
        h, w = frame.shape[:2]
        return F.pad(lightness, (0, -w % s, 0, -h % s), mode="replicate")

    @torch.inference_mode()
    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield (D, h, w) embeddings, exactly as the encoder computes them on the whole video."""
        cache = None
        for frame in frames:
            features = self.encoder.features(self.lightness(frame))
            embedding, cache = self.encoder.head.step(features, cache)
            embedding = embedding[0]
            yield F.normalize(embedding, dim=0) if self.normalize else embedding


def labels_to_grid(labels: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """(K, H, W) full-size soft labels -> (K, h, w) at feature resolution (area average)."""
    x = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(device)[None]
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="replicate")
    return F.avg_pool2d(x, stride)[0]


def grid_to_labels(grid: torch.Tensor, stride: int, height: int, width: int) -> np.ndarray:
    """(K, h, w) -> (K, H, W): bilinear upsampling by the stride, cropped to the frame."""
    up = F.interpolate(grid[None], scale_factor=stride, mode="bilinear", align_corners=False)
    return up[0, :, :height, :width].cpu().numpy()


class LearnedPropagator:
    """Label propagation with the learned embedding (first frame + recent predictions)."""

    name = "model"

    def __init__(self, encoder: Encoder, propagation: PropagationConfig | None = None,
                 device: str = "cpu") -> None:
        self.cfg = propagation or PropagationConfig()
        self.frames = FrameEncoder(encoder, device, normalize=self.cfg.normalize)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None,
                        propagation: PropagationConfig | None = None,
                        device: str = "cpu") -> LearnedPropagator:
        encoder, _, _ = load_model(path)
        return cls(encoder, propagation, device)

    @torch.inference_mode()
    def propagate(self, frames: Iterable[np.ndarray], first_labels: np.ndarray
                  ) -> Iterator[np.ndarray]:
        cfg, stride = self.cfg, Encoder.stride
        height, width = first_labels.shape[-2:]
        first: tuple[torch.Tensor, torch.Tensor] | None = None
        recent: collections.deque = collections.deque(maxlen=cfg.context)
        for embedding in self.frames.stream(frames):
            if first is None:
                first = (embedding, labels_to_grid(first_labels, stride, embedding.device))
                continue
            grid = propagate(embedding, [first, *recent], temperature=cfg.temperature,
                             topk=cfg.topk, radius=cfg.radius)
            recent.append((embedding, grid))
            yield grid_to_labels(grid, stride, height, width)
