"""Training clips from any folder of videos: `refs` + 1 frames at a fixed frame rate.

Sample i of the stream is a pure function of (seed, i), so a resumed run sees exactly the clips
an uninterrupted one would, whatever the number of workers.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from colortrack.config import TrainConfig
from colortrack.data.video import VideoReader, list_videos, probe, read_clip
from colortrack.errors import ColortrackError

log = logging.getLogger(__name__)


def find_videos(sources: list[str | Path]) -> list[Path]:
    """Video files and frame folders under each source (a file or a folder, recursive)."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise ColortrackError(f"{path}: no such file or folder")
        found.extend(list_videos(path) if path.is_dir() else [path])
    if not found:
        raise ColortrackError(f"no videos found in {', '.join(map(str, sources))}")
    return found


class ClipDataset(Dataset):
    """Item i -> uint8 tensor (refs+1, 3, size, size), RGB, one random crop shared by the clip."""

    def __init__(self, videos: list[Path], cfg: TrainConfig, length: int,
                 progress: bool = False) -> None:
        self.cfg = cfg
        self.length = length
        self.frames: list[np.ndarray] = []  # cached clips at cfg.fps, when caching
        self.videos: list[tuple[Path, float]] = []  # (path, duration) when seeking
        errors: list[ColortrackError] = []
        what = "decoding videos" if cfg.cache_short_side > 0 else "reading videos"
        for path in tqdm(videos, desc=what, unit="video", disable=not progress, leave=False,
                         dynamic_ncols=True):
            try:
                if cfg.cache_short_side > 0:
                    with VideoReader(path, short_side=cfg.cache_short_side, fps=cfg.fps) as video:
                        frames = np.stack(list(video))
                    if len(frames) >= self.span:
                        self.frames.append(frames)
                else:
                    info = probe(path)
                    duration = (info.num_frames or 0) / (info.fps or 1)
                    if duration * cfg.fps >= self.span:
                        self.videos.append((path, duration))
            except ColortrackError as error:
                errors.append(error)
        sizes = [len(f) for f in self.frames] or [d * cfg.fps for _, d in self.videos]
        if len(videos) == 1 and errors:
            raise errors[0]
        for error in errors:
            log.warning("skipping %s", error)
        if not sizes:  # one line naming the file when there is one
            what = f"{videos[0]}: too short" if len(videos) == 1 else (
                f"all {len(videos)} videos are unreadable or too short")
            raise ColortrackError(f"{what} for a training clip of {self.span} frames at "
                                  f"{cfg.fps:g} fps")
        self.skipped = skipped = len(errors)
        self.seconds = sum(sizes) / cfg.fps  # of video the clips are cut from
        self.weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        log.info("%d training videos (%d skipped), %.0f frames at %g fps",
                 len(sizes), skipped, sum(sizes), cfg.fps)

    @property
    def span(self) -> int:
        """Frames (at cfg.fps) a clip may cover with the largest gap."""
        return self.cfg.refs * self.cfg.max_gap + 1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = random.Random(self.cfg.seed * 1_000_003 + index)
        video = rng.choices(range(len(self.weights)), weights=self.weights)[0]
        gap = rng.randint(1, self.cfg.max_gap)
        count = self.cfg.refs + 1
        if self.frames:
            frames = self.frames[video]
            start = rng.randrange(len(frames) - (count - 1) * gap)
            clip = [frames[start + k * gap] for k in range(count)]
        else:
            clip = self._seek_clip(video, gap, count, rng)
        return torch.from_numpy(self._augment(np.stack(clip), rng)).permute(0, 3, 1, 2)

    def _seek_clip(self, video: int, gap: int, count: int, rng: random.Random) -> list:
        """Decode a clip by seeking; a container's duration can be optimistic (frames missing at
        the end), so a clip that runs past the real end is retried earlier in the video."""
        path, duration = self.videos[video]
        step = gap / self.cfg.fps
        latest = max(duration - (count - 1) * step - 0.05, 0.0)
        for _ in range(4):
            try:
                return read_clip(path, rng.uniform(0, latest), count, step)
            except ColortrackError:
                latest /= 2
        return read_clip(path, 0.0, count, step)

    def _augment(self, clip: np.ndarray, rng: random.Random) -> np.ndarray:
        """Random scale/aspect crop + flip, identical for every frame of the clip."""
        _, h, w, _ = clip.shape
        area = rng.uniform(*self.cfg.scale) * min(h, w) ** 2
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
        size = self.cfg.size
        out = np.stack([cv2.resize(f[y:y + ch, x:x + cw], (size, size),
                                   interpolation=cv2.INTER_AREA) for f in clip])
        return out[:, :, ::-1].copy() if rng.random() < 0.5 else out
