"""What the model learned, made visible: recolor a gray video from one color frame (the paper's
training task at test time), and a PCA movie of the embedding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from colortrack.color import lab_to_rgb, lightness, quantize
from colortrack.copy.context import Context
from colortrack.copy.propagate import propagate
from colortrack.data.files import IMAGE_ERRORS, check_new_file, reason, upright
from colortrack.data.outputs import locked
from colortrack.data.video import VideoReader
from colortrack.data.video_writer import VideoWriter
from colortrack.errors import ColortrackError
from colortrack.model.checkpoint import load_model
from colortrack.model.device import torch_device
from colortrack.model.features import FrameEncoder, padded_lab
from colortrack.model.network import Encoder
from colortrack.track.propagator import grid_to_labels


def _read_reference(path: str | Path, width: int, height: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ColortrackError(f"{path}: reference image not found")
    try:
        with Image.open(path) as image:
            rgb = np.array(upright(image).convert("RGB"))
    except IMAGE_ERRORS as error:
        raise ColortrackError(f"{path}: cannot read reference image ({reason(error)})") from None
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC))
    return rgb


def recolor(frames: VideoReader, reference: np.ndarray, encoder: Encoder,
            centroids: torch.Tensor, device: str | torch.device = "cpu", temperature: float = 0.5
            ) -> Iterator[np.ndarray]:
    """Color each frame by copying ab classes from `reference` (global search, paper's T=0.5)."""
    stride, k = Encoder.stride, len(centroids)
    ref_ab = F.avg_pool2d(padded_lab(reference, torch.device(device))[:, 1:], stride)
    classes = quantize(ref_ab, centroids.to(device))[0]  # on the embedding's (padded) grid
    ref_onehot = F.one_hot(classes, k).permute(2, 0, 1).float()
    embed = FrameEncoder(encoder, device, normalize=False, gray=True)
    ref_embedding, _ = embed.step(reference, None)
    memory = Context(ref_embedding, ref_onehot, recent=0, radius=0)
    cache = None
    for frame in frames:
        embedding, cache = embed.step(frame, cache)
        probs = propagate(embedding, memory, temperature=temperature, topk=None)
        h, w = frame.shape[:2]
        full = torch.from_numpy(grid_to_labels(probs, stride, h, w))
        ab = centroids[full.argmax(0)].permute(2, 0, 1)
        rgb = lab_to_rgb(torch.cat([lightness(frame)[None, None], ab[None]], 1))[0]
        yield (rgb.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


@torch.inference_mode()
def colorize_video(video: str | Path, reference: str | Path, out: str | Path,
                   model: str | Path | None = None, device: str = "cpu",
                   progress: bool = True, overwrite: bool = False) -> Path:
    """Write OUT.mp4: the video's gray frames colored from one color frame."""
    check_new_file(out, overwrite, inputs=(video, reference))
    where = torch_device(device)  # checked before the writer starts; the encoder starts later
    encoder, centroids, _ = load_model(model)
    with locked(out), VideoReader(video) as frames:
        ref = _read_reference(reference, frames.info.width, frames.info.height)
        with VideoWriter(out, frames.info.fps or 24.0) as writer:
            for rgb in tqdm(recolor(frames, ref, encoder, centroids, where),
                            total=frames.info.num_frames, disable=not progress, unit="frame"):
                writer.write(rgb)
    return Path(out)


@torch.inference_mode()
def embed_video(video: str | Path, out: str | Path, model: str | Path | None = None,
                device: str = "cpu", fit_frames: int = 10, progress: bool = True,
                overwrite: bool = False) -> Path:
    """Write OUT.mp4: the embedding's first 3 principal components as RGB, beside the frame.

    The projection and its color range are fitted on the first `fit_frames` frames and then
    kept, so a surface keeps its color over time.
    """
    check_new_file(out, overwrite, inputs=(video,))
    encoder, _, _ = load_model(model)
    embed = FrameEncoder(encoder, device, normalize=True)
    with (locked(out), VideoReader(video) as frames,
          VideoWriter(out, frames.info.fps or 24.0) as writer):
        head, buffered = [], []
        projection, cache = None, None
        for frame in tqdm(frames, disable=not progress, total=frames.info.num_frames,
                          unit="frame"):
            embedding, cache = embed.step(frame, cache)
            if projection is None:
                head.append(embedding.flatten(1).T)
                buffered.append((frame, embedding))
                if len(head) < fit_frames:
                    continue
                projection = _fit_pca(torch.cat(head), video)
                pending, buffered = buffered, []
            else:
                pending = [(frame, embedding)]
            for f, e in pending:
                writer.write(_render(f, e, *projection))
        if projection is None and head:
            projection = _fit_pca(torch.cat(head), video)
            for f, e in buffered:
                writer.write(_render(f, e, *projection))
    return Path(out)


def _fit_pca(x: torch.Tensor, video: str | Path
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3 principal components of embeddings `x` (N, D) and their 1-99 % ranges."""
    if len(x) < 3:  # three colors need three embedding cells (8x8 pixels each) at least
        raise ColortrackError(f"{video}: too small to embed ({len(x)} embedding cells in the "
                              f"first frames; 3 are needed, as in one 16x16 frame)")
    mean = x.mean(0)
    _, _, v = torch.pca_lowrank(x - mean, q=3, center=False)
    y = (x - mean) @ v
    return mean, v, y.quantile(0.01, dim=0), y.quantile(0.99, dim=0)


def _render(frame: np.ndarray, embedding: torch.Tensor, mean, v, lo, hi) -> np.ndarray:
    d, h, w = embedding.shape
    y = ((embedding.flatten(1).T - mean) @ v - lo) / (hi - lo).clamp_min(1e-6)
    grid = y.clamp(0, 1).T.reshape(3, h, w)
    rgb = grid_to_labels(grid, Encoder.stride, frame.shape[0], frame.shape[1])
    pca = (rgb.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    return np.concatenate([frame, pca], axis=1)
