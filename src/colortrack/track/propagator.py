"""The learned tracker: embed each frame, then copy labels from the first frame and recent frames.

This is the colorization model's copy operator pointed at labels instead of colors. Memory is
bounded by the context (first frame + `context` recent frames), never by the video's length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colortrack.config import PropagationConfig
from colortrack.copy.context import Context
from colortrack.copy.propagate import propagate
from colortrack.copy.windows import TILE, TILE_IN_FLOAT
from colortrack.model.checkpoint import load_model
from colortrack.model.device import PARALLEL, choice_dtype, int8_products, one_frame_ahead
from colortrack.model.features import FrameEncoder, LabPixels, ModelAndPixels, pad_to_stride
from colortrack.model.network import Encoder
from colortrack.stages import stage


def labels_to_grid(labels: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """(K, H, W) full-size soft labels -> (K, h, w) at feature resolution (area average)."""
    x = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(device)[None]
    return F.avg_pool2d(pad_to_stride(x, stride), stride)[0]


def grid_to_labels(grid: torch.Tensor, stride: int, height: int, width: int) -> np.ndarray:
    """(K, h, w) -> (K, H, W): bilinear upsampling by the stride, pixel centres aligned (as
    F.interpolate's align_corners=False, to 1e-6), cropped to the frame. OpenCV's resize is 8x
    PyTorch's speed at 480p; its result is channels-last, and this is a view of it."""
    k, h, w = grid.shape
    cells = np.ascontiguousarray(grid.float().cpu().numpy().transpose(1, 2, 0))
    up = cv2.resize(cells, (w * stride, h * stride), interpolation=cv2.INTER_LINEAR)
    return up.reshape(h * stride, w * stride, k)[:height, :width].transpose(2, 0, 1)


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
        # Learned unit embeddings (with scaled pixels beside them, too) are ranked well enough
        # by bf16 or int8 products to choose the top-k; raw pixels alone (norms up to 1e4) not.
        lower = encoder is not None and self.cfg.topk is not None
        self.scoring = (choice_dtype(self.cfg.precision, self.frames.device) if lower
                        else torch.float32)
        # The same int32 sums on torch._int_mm or float32 GEMMs: whichever is fast on this CPU.
        self.int8_in_float = self.scoring == torch.int8 and int8_products().in_float

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

    def key_query(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def scoring_for(self, first: torch.Tensor) -> torch.dtype:
        """`scoring`, except int8 on nearly parallel embeddings (see PARALLEL): the encoder's
        dtype there (bf16 where native, which keeps their precision once centred)."""
        if self.scoring != torch.int8 or self.cfg.precision == "int8":
            return self.scoring
        spread = float(F.normalize(first[:self.embed_dim], dim=0).mean((1, 2)).norm())
        return self.frames.dtype if spread > PARALLEL else self.scoring

    @property
    def embeds_ahead(self) -> bool:
        """Whether the next frame is embedded while this one's labels are copied, on threads of
        its own (`one_frame_ahead`): where the two stages take about as long, a bf16 encoder and
        a windowed copy. A float32 encoder, raw pixels or a dense first frame leave one stage
        far the longer, and it is faster on all the threads (docs/performance.md)."""
        return (isinstance(self.frames, FrameEncoder | ModelAndPixels)
                and self.frames.dtype != torch.float32 and self.cfg.radius > 0
                and not self.cfg.global_first)

    @torch.inference_mode()
    def propagate(self, frames: Iterable[np.ndarray], first_labels: np.ndarray,
                  given: Mapping[int, np.ndarray] | None = None) -> Iterator[np.ndarray]:
        """Soft labels of frames 1, 2, ...; `given` labels of later frames replace their
        prediction and join the first frame as long-term references (Context.anchor)."""
        with one_frame_ahead(self.frames.stream(frames), self.frames.device,
                             self.embeds_ahead) as embeddings:
            yield from self._copy(embeddings, first_labels, given or {})

    @torch.inference_mode()
    def propagate_cells(self, frames: Iterable[np.ndarray], first_cells: torch.Tensor
                        ) -> Iterator[torch.Tensor]:
        """`propagate` on the encoder's grid: (K, h, w) labels of frames 1, 2, ... from frame
        0's (K, h, w), never upsampled, for measures taken per feature cell."""
        with one_frame_ahead(self.frames.stream(frames), self.frames.device,
                             self.embeds_ahead) as embeddings:
            yield from self._copy(embeddings, first_cells, {}, cells=True)

    def _copy(self, embeddings: Iterator[torch.Tensor], first_labels: np.ndarray | torch.Tensor,
              given: Mapping[int, np.ndarray], cells: bool = False
              ) -> Iterator[np.ndarray | torch.Tensor]:
        """Labels of frames 1, 2, ... copied from the context, frame by frame (with `cells`,
        first_labels and the results are on the feature grid)."""
        cfg, stride = self.cfg, Encoder.stride
        height, width = first_labels.shape[-2:]
        context: Context | None = None
        for index, embedding in enumerate(embeddings):
            key, query = self.key_query(embedding)
            if context is None:
                labels = (first_labels.to(embedding.device) if cells
                          else labels_to_grid(first_labels, stride, embedding.device))
                context = Context(key, labels, recent=cfg.context, radius=cfg.radius,
                                  global_first=cfg.global_first, scoring=self.scoring_for(key),
                                  anchors=len(given), int8_in_float=self.int8_in_float,
                                  tile=TILE_IN_FLOAT if self.int8_in_float else TILE)
            elif index in given:
                context.anchor(key, labels_to_grid(given[index], stride, embedding.device))
                yield np.asarray(given[index], dtype=np.float32)
            else:
                with stage("copy"):
                    grid = propagate(query, context, temperature=cfg.temperature, topk=cfg.topk)
                    context.append(key, grid)
                if cells:
                    yield grid
                    continue
                with stage("upsample"):
                    labels = grid_to_labels(grid, stride, height, width)
                yield labels
