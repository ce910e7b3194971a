"""Learn to track by colorizing: the training loop, from one CPU to many GPUs (torchrun).

A run folder holds metrics.csv (and metrics.png, its curves, where matplotlib is installed),
previews/, model.safetensors (the latest weights, ready for
`colortrack track --model`) and ckpt-<step>/ folders (weights, optimizer, state.json) written
whole-or-nothing; `latest` names the newest complete one, which --resume continues exactly.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from colortrack.bounds import check_memory
from colortrack.color import hide_chroma, kmeans, lab_to_rgb, quantize, rgb_to_lab
from colortrack.config import ModelConfig, TrainConfig, from_dict, override, preset, to_dict
from colortrack.data.files import atomic_path
from colortrack.data.outputs import locked
from colortrack.errors import ColortrackError, Terminated, UsageError
from colortrack.eval.demo_clip import DemoClip, DemoScore
from colortrack.eval.plots import plot_training
from colortrack.model.checkpoint import Checkpoints, load_model, load_optimizer, read_state
from colortrack.model.device import torch_device
from colortrack.model.network import Encoder, colorization_loss
from colortrack.training.clips import ClipDataset, find_videos
from colortrack.training.report import TrainSummary, checkpoint_line, score_on_demo
from colortrack.validate import check_paths

log = logging.getLogger(__name__)


def to_lab_batch(clips: torch.Tensor, centroids: torch.Tensor, input: str = "L",
                 hidden: torch.Tensor | None = None, full_res: bool = False,
                 rescale: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """uint8 (B, T, 3, S, S) -> the encoder's input (B, T, C, S, S), color classes
    (B, T, S/8, S/8) and, with `full_res`, the last frame's classes at (B, S, S).

    The input is L, or for `input` "Lab" the frames with the chroma channels `hidden` (B, 2)
    hides (default: both, the paper's task), the rest rescaled or not (`rescale`)."""
    b, t = clips.shape[:2]
    lab = rgb_to_lab(clips.flatten(0, 1).float() / 255)
    ab = F.avg_pool2d(lab[:, 1:], Encoder.stride)
    classes = quantize(ab, centroids).view(b, t, *ab.shape[-2:])
    target = quantize(lab[t - 1::t, 1:], centroids) if full_res else None
    lab = lab.view(b, t, 3, *lab.shape[-2:])
    if input == "L":
        return lab[:, :, :1], classes, target
    if hidden is None:
        hidden = torch.ones(b, 2, dtype=torch.bool, device=lab.device)
    return hide_chroma(lab, hidden[:, None], rescale), classes, target


def draw_hidden(count: int, drop_both: float, generator: torch.Generator) -> torch.Tensor:
    """(count, 2) bool: which chroma channels each clip hides, both with chance `drop_both`,
    else a or b at even odds."""
    both = torch.rand(count, generator=generator) < drop_both
    b_only = torch.rand(count, generator=generator) < 0.5
    return torch.stack([both | ~b_only, both | b_only], 1)


def sample_ab(dataset: ClipDataset, count: int, seed: int, progress: bool = False,
              what: str = "color clusters") -> torch.Tensor:
    """(count, 2) ab values at feature resolution from clips far beyond any training index."""
    pixels, index, total = [], 0, 0
    per_clip = max(64, count // 400)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=count, desc=what, unit="px", unit_scale=True, disable=not progress,
               leave=False, dynamic_ncols=True)
    while total < count:
        clip = dataset[10**9 + index]
        index += 1
        ab = F.avg_pool2d(rgb_to_lab(clip.float() / 255)[:, 1:], Encoder.stride)
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        pixels.append(flat[torch.randperm(len(flat), generator=generator)[:per_clip]])
        total += len(pixels[-1])
        bar.update(len(pixels[-1]))
    bar.close()
    return torch.cat(pixels)


def color_prior(ab: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The marginal distribution of color classes: the baseline that ignores the frames."""
    counts = torch.bincount(quantize(ab.T[None, :, :, None], centroids).flatten(),
                            minlength=len(centroids)).double()
    return (counts + 1) / (counts.sum() + len(centroids))


def loss_of(model: torch.nn.Module, cfg: TrainConfig, inputs: torch.Tensor,
            classes: torch.Tensor, target: torch.Tensor | None, num_colors: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The colorization loss of a batch, with the recipe's copy settings."""
    amp = inputs.device.type == "cuda"
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
        embeddings = model(inputs)
    return colorization_loss(embeddings.float(), classes, num_colors, cfg.temperature,
                             normalize=cfg.normalize, radius=cfg.radius, full_res=target)


@torch.no_grad()
def validate(encoder: Encoder, clips: torch.Tensor, centroids: torch.Tensor,
             prior: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """Held-out colorization loss and accuracy (every chroma channel hidden), next to the color
    prior's loss and accuracy."""
    was_training = encoder.training
    encoder.eval()
    losses, accuracies, prior_losses, prior_accuracies = [], [], [], []
    for chunk in clips.split(16):
        inputs, classes, target = to_lab_batch(chunk.to(centroids.device), centroids,
                                               encoder.cfg.input, full_res=cfg.full_res_loss,
                                               rescale=encoder.cfg.rescale_hidden)
        loss, accuracy, _ = loss_of(encoder, cfg, inputs, classes, target, len(centroids))
        truth = (classes[:, -1] if target is None else target).flatten()
        losses.append(loss.item())
        accuracies.append(accuracy.item())
        prior_losses.append(-torch.log(prior.to(truth.device)[truth]).mean().item())
        prior_accuracies.append((truth == prior.argmax()).float().mean().item())
    encoder.train(was_training)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"val_loss": mean(losses), "val_accuracy": mean(accuracies),
            "prior_loss": mean(prior_losses), "prior_accuracy": mean(prior_accuracies)}


def initial_model(path: str, cfg: ModelConfig) -> tuple[Encoder, torch.Tensor]:
    """An encoder of `cfg` started from a model file's weights and color classes; a gray
    model's first convolution starts a color one, with zero weights on a and b (so the color
    model begins as exactly the gray one)."""
    source, centroids, _ = load_model(path)
    if dataclasses.replace(source.cfg, input=cfg.input, rescale_hidden=cfg.rescale_hidden) != cfg:
        raise UsageError(f"--set init={path}: that model's architecture is not this run's "
                         f"({source.cfg} against {cfg})")
    encoder = Encoder(cfg)
    weights = source.state_dict()
    stem = "trunk.stem.0.weight"
    if weights[stem].shape != encoder.state_dict()[stem].shape:
        if source.cfg.input != "L":
            raise UsageError(f"--set init={path}: a {source.cfg.input} model cannot start a "
                             f"{cfg.input} one")
        weights[stem] = F.pad(weights[stem], (0, 0, 0, 0, 0, cfg.in_channels - 1))
    encoder.load_state_dict(weights)
    return encoder.train(), centroids


def learning_rate(cfg: TrainConfig, step: int) -> float:
    return cfg.lr if step < cfg.lr_drop_step else cfg.lr_final


def save_preview(path: Path, lightness: torch.Tensor, probs: torch.Tensor,
                 classes: torch.Tensor, centroids: torch.Tensor) -> None:
    """gray target | predicted colors | true colors (ab of the class centers on the true L)."""
    size = lightness.shape[-1]

    def render(ab: torch.Tensor) -> np.ndarray:
        ab = F.interpolate(ab[None], size=(size, size), mode="nearest")[0]
        rgb = lab_to_rgb(torch.cat([lightness, ab])[None])[0]
        return (rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    expected_ab = torch.einsum("khw,kc->chw", probs, centroids)
    true_ab = centroids[classes].permute(2, 0, 1)
    gray = render(torch.zeros(2, *classes.shape))
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([gray, render(expected_ab), render(true_ab)], 1)).save(
            tmp, format="PNG")


class MetricsLog:
    """metrics.csv, one row per logged step; on resume, rows past the checkpoint are dropped."""

    columns = ["step", "loss", "accuracy", "lr", "clips_per_s", "elapsed_s",
               "val_loss", "val_accuracy", "prior_loss", "prior_accuracy"]

    def __init__(self, path: Path, resume_step: int) -> None:
        rows = []
        if path.is_file() and resume_step > 0:
            try:
                with path.open(encoding="utf-8") as f:
                    rows = [r for r in csv.DictReader(f)  # a killed run may leave a cut row
                            if None not in r and None not in r.values()
                            and int(r["step"]) <= resume_step]
            except (ValueError, KeyError, csv.Error) as error:
                raise ColortrackError(f"{path}: damaged metrics log ({error}); move it away "
                                      "to resume without it") from None
        self.path = path
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)


def _leave_signals_to_main(_worker: int) -> None:
    """Ctrl-C or SIGTERM sent to the whole process group reach the workers too; they leave it to
    the main process, which checkpoints and then shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _tensorboard(out: Path):
    """A TensorBoard writer, from the optional `tensorboard` extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("tensorboard=true needs TensorBoard: "
                         "pip install 'colortrack[tensorboard]'") from None
    return SummaryWriter(str(out / "tensorboard"))


def _setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Rank, world size and device; torchrun sets WORLD_SIZE/RANK/LOCAL_RANK."""
    world, chosen = int(os.environ.get("WORLD_SIZE", "1")), torch_device(device)
    if world == 1:
        return 0, 1, chosen
    use_cuda = chosen.type == "cuda"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def resolve_configs(preset_name: str | None, resume_state: dict | None, steps: int | None,
                    batch: int | None, lr: float | None, overrides: list[str]
                    ) -> tuple[ModelConfig, TrainConfig]:
    """The preset (or the resumed run's saved configs) with command-line changes applied:
    `overrides` may set the model's fields (a new run only) and the recipe's."""
    if resume_state is not None:
        saved = resume_state.get("preset")
        if preset_name not in (None, saved):
            raise UsageError(f"the run to resume was trained with preset {saved!r}, not "
                             f"{preset_name!r}; leave out --preset or choose another --out")
        model_cfg = from_dict(ModelConfig, resume_state["model_config"])
        cfg = from_dict(TrainConfig, resume_state["train_config"])
    else:
        chosen = preset(preset_name or "cpu")
        model_cfg, cfg = chosen.model, chosen.train
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    is_model = [pair.partition("=")[0].strip().replace("-", "_") in model_keys
                for pair in overrides]
    if any(is_model) and resume_state is not None:
        raise UsageError("the model of a run cannot change on --resume (start a new run, "
                         "perhaps with --set init=RUN/model.safetensors)")
    model_cfg = override(model_cfg, [p for p, m in zip(overrides, is_model, strict=True) if m])
    cfg = override(cfg, [p for p, m in zip(overrides, is_model, strict=True) if not m])
    direct = {"steps": steps, "batch": batch, "lr": lr}
    cfg = override(cfg, [f"{k}={v}" for k, v in direct.items() if v is not None])
    return model_cfg, cfg


def run_files(out: Path) -> list[str]:
    """Names in `out` that belong to a training run (what --overwrite removes)."""
    if not out.is_dir():
        return []
    names = ("latest", "metrics.csv", "metrics.png", "model.safetensors", "previews",
             "tensorboard")
    return sorted(n for n in os.listdir(out) if n in names or n.startswith(("ckpt-", ".ckpt-")))


def run(videos: list[str | Path], *, preset: str | None = None, out: str | Path,
        steps: int | None = None, batch: int | None = None, lr: float | None = None,
        resume: bool = False, overwrite: bool = False, overrides: list[str] | None = None,
        device: str = "cpu", progress: bool = True) -> TrainSummary:
    """Train an encoder by colorization on `videos`; returns how the run ended (its folder,
    losses and, on the process that writes it, the model's J&F on the demo clip).

    `preset` defaults to 'cpu' for a new run and to the run's own when resuming. A folder that
    holds anything of a run is continued (`resume`) or replaced (`overwrite`), never silently
    reused; the run folder holds the lock of its one writer and is never training data.
    """
    out = Path(out)
    check_paths(videos, folders=[out])
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it; "
                         "give one")
    if int(os.environ.get("RANK", "0")) != 0:  # the lock is rank 0's: one writer per run
        return _train(videos, preset, out, steps, batch, lr, resume, overwrite, overrides,
                      device, progress)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColortrackError(f"{out}: cannot use as run folder ({error.strerror})") from None
    try:
        with locked(out):
            return _train(videos, preset, out, steps, batch, lr, resume, overwrite, overrides,
                          device, progress)
    except BaseException:
        with contextlib.suppress(OSError):
            for folder in created:
                folder.rmdir()  # only when empty: a refused run leaves no folders behind
        raise


def _existing_run(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from; refuses a run folder that would be reused silently."""
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 checked, and may be writing already
        return Checkpoints(out).latest() if resume else None
    found = run_files(out)
    if not found or overwrite:
        return None
    if not resume:
        raise UsageError(f"{out} already holds a training run ({found[0]}, ...); pass --resume "
                         "to continue it, --overwrite to replace it, or choose another --out")
    latest = Checkpoints(out).latest()
    if latest is None:
        complete = sorted(p.name for p in out.glob("ckpt-*") if (p / "state.json").is_file())
        hint = (f"write {complete[-1]} into it to resume from that checkpoint"
                if complete else "no complete checkpoint is left")
        raise ColortrackError(f"{out / 'latest'}: missing, so the run cannot resume exactly; "
                              f"{hint}, or pass --overwrite to start afresh")
    return latest


def _train(videos: list[str | Path], preset: str | None, out: Path, steps: int | None,
           batch: int | None, lr: float | None, resume: bool, overwrite: bool,
           overrides: list[str] | None, device: str, progress: bool) -> TrainSummary:
    """The three phases of a run: prepare (check, then build), loop, finish."""
    started = time.perf_counter()
    run = _prepare(videos, preset, out, steps, batch, lr, resume, overwrite, overrides, device,
                   progress)
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _loop(run, stop, progress)
    finally:
        _finish(run, previous)
    if stop["signal"] is not None:
        raise Terminated if stop["signal"] == signal.SIGTERM else KeyboardInterrupt
    if run.demo is not None and run.score is None:  # a resumed run that had nothing left to do
        run.score = score_on_demo(run.demo, run.encoder, run.dev)
    return TrainSummary(out, run.step, time.perf_counter() - started, run.video_seconds / 60,
                        run.loss, run.val, run.score)


@dataclasses.dataclass
class _Run:
    """A run made ready by `_prepare`: settings, this process's place, model and data."""

    out: Path
    model_cfg: ModelConfig
    cfg: TrainConfig
    rank: int
    world: int
    dev: torch.device
    start: int
    encoder: Encoder
    model: torch.nn.Module  # the encoder, wrapped for DDP with several processes
    centroids: torch.Tensor
    prior: torch.Tensor
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    val_clips: torch.Tensor | None
    checkpoints: Checkpoints
    state_doc: dict
    video_seconds: float  # of training video
    demo: DemoClip | None  # the clip each checkpoint is scored on (the writing process only)
    bar: tqdm | None = None  # the loop's progress bar, closed by `_finish`
    board: Any = None  # the loop's TensorBoard writer, closed by `_finish`
    step: int = 0  # the last step done, and how it went:
    loss: float | None = None
    val: dict[str, float] | None = None
    score: DemoScore | None = None

    def checkpoint(self, step: int) -> None:
        if self.rank == 0:
            self.checkpoints.save(self.encoder, self.centroids, self.optimizer,
                                  {**self.state_doc, "step": step})


def _prepare(videos: list[str | Path], preset: str | None, out: Path, steps: int | None,
             batch: int | None, lr: float | None, resume: bool, overwrite: bool,
             overrides: list[str] | None, device: str, progress: bool) -> _Run:
    """Check everything, then build the model, data and optimizer; the run folder is touched
    only once all is ready."""
    checkpoints = Checkpoints(out)
    latest = _existing_run(out, resume, overwrite)
    state = read_state(latest) if latest and resume else None
    model_cfg, cfg = resolve_configs(preset, state, steps, batch, lr, overrides or [])
    # The clips and the stem's activations of one step: a floor under what training needs.
    check_memory(cfg.batch * (cfg.refs + 1) * cfg.size**2 * (15 + model_cfg.stem_channels),
                 f"training with batch {cfg.batch} of {cfg.refs + 1} frames at {cfg.size}x"
                 f"{cfg.size}", "lower --batch or --set size or refs")
    rank, world, dev = _setup_distributed(device)
    if cfg.batch % world:
        raise UsageError(f"--batch {cfg.batch} must be divisible by the {world} processes")
    torch.manual_seed(cfg.seed + rank)
    start = state["step"] if state else 0
    per_rank = cfg.batch // world
    found = find_videos(videos)
    held = [v for v in found if v.stem in cfg.holdout or v.name in cfg.holdout]
    unknown = set(cfg.holdout) - {v.stem for v in held} - {v.name for v in held}
    if unknown or (held and len(held) == len(found)):
        raise UsageError(f"holdout: no training video named {', '.join(sorted(unknown))}"
                         if unknown else "holdout keeps out every video; nothing is left to train")
    # Item i of the stream is a pure function of i; the sampler picks which i each step sees.
    shown = progress and rank == 0
    dataset = ClipDataset([v for v in found if v not in held], cfg, length=10**9,
                          progress=shown)
    val_clips = None
    if held:
        val_set = ClipDataset(held, cfg, length=cfg.val_clips)
        val_clips = torch.stack([val_set[i] for i in range(cfg.val_clips)])
    if latest is not None and state is not None:
        encoder, centroids, _ = load_model(latest / "model.safetensors")
        if encoder.cfg != model_cfg:
            raise ColortrackError(f"{latest}: model.safetensors does not match state.json")
        encoder.train()
    elif cfg.init:
        encoder, centroids = initial_model(cfg.init, model_cfg)
    else:
        centroids = kmeans(sample_ab(dataset, cfg.kmeans_pixels, cfg.seed, shown),
                           model_cfg.num_colors, seed=cfg.seed)
        encoder = Encoder(model_cfg)
    if rank == 0:  # the model and data are ready: only now is the run folder touched
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:  # everything is checked: only now does the earlier run go
            for path in (out / name for name in run_files(out)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        checkpoints.clean()
        (out / "previews").mkdir(exist_ok=True)
    prior = color_prior(sample_ab(dataset, cfg.kmeans_pixels, cfg.seed + 1, shown,
                                  "color prior"), centroids)
    encoder.to(dev)
    centroids = centroids.to(dev)
    model: torch.nn.Module = encoder
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            encoder, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=learning_rate(cfg, start),
                                 weight_decay=cfg.weight_decay)
    if latest is not None and state is not None:
        load_optimizer(latest / "optimizer.safetensors", optimizer)

    # Sample index of rank r at step s, item j: (s * world + r) * per_rank + j.
    sampler = _RankSampler(start, cfg.steps, world, rank, per_rank)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                        worker_init_fn=_leave_signals_to_main,
                        persistent_workers=cfg.workers > 0, pin_memory=dev.type == "cuda")
    state_doc = {"model_config": to_dict(model_cfg), "train_config": to_dict(cfg),
                 "preset": state["preset"] if state else preset or "cpu", "world": world}
    demo = DemoClip(cfg.demo_frames) if rank == 0 and cfg.demo_frames else None
    return _Run(out, model_cfg, cfg, rank, world, dev, start, encoder, model, centroids, prior,
                optimizer, loader, val_clips, checkpoints, state_doc, dataset.seconds, demo,
                step=start)


def _loop(run: _Run, stop: dict[str, int | None], progress: bool) -> None:
    """Train from `run.start` to the last step, logging, validating and checkpointing; a
    signal in `stop` ends it after the step in progress, with a checkpoint."""
    cfg, model_cfg, out, rank, world, dev = (run.cfg, run.model_cfg, run.out, run.rank,
                                             run.world, run.dev)
    encoder, centroids, optimizer, checkpoints = (run.encoder, run.centroids, run.optimizer,
                                                  run.checkpoints)
    metrics = MetricsLog(out / "metrics.csv", run.start) if rank == 0 else None
    board = run.board = _tensorboard(out) if cfg.tensorboard and rank == 0 else None
    run.bar = tqdm(total=cfg.steps, initial=run.start, disable=not progress or rank != 0,
                   dynamic_ncols=True, unit="step")
    step, tick, clips_seen, t0 = run.start, time.perf_counter(), 0, time.perf_counter()
    for clips in run.loader:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        clips = clips.to(dev, non_blocking=True)
        # Which chroma each clip hides: a pure function of the step, as the clips are.
        draw = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * world + rank)
        hidden = draw_hidden(len(clips), cfg.drop_both, draw).to(dev)
        inputs, classes, target = to_lab_batch(clips, centroids, model_cfg.input, hidden,
                                               cfg.full_res_loss, model_cfg.rescale_hidden)
        loss, accuracy, probs = loss_of(run.model, cfg, inputs, classes, target,
                                        model_cfg.num_colors)
        if not math.isfinite(loss.item()):
            kept = (f"the last good checkpoint is kept in {out} (try a lower --lr, then "
                    "--resume)" if checkpoints.latest() else "no checkpoint was written yet "
                    "(try a lower --lr)")
            raise ColortrackError(f"loss became {loss.item()} at step {step + 1}; stopped: "
                                  f"{kept}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step = run.step = step + 1
        run.loss = loss.item()
        clips_seen += len(clips) * world
        run.bar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.perf_counter()
            rate = clips_seen / (now - tick)
            run.bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy.item():.3f}",
                                clips_s=f"{rate:.1f}")
            row = {"step": step, "loss": f"{loss.item():.5f}",
                   "accuracy": f"{accuracy.item():.5f}", "lr": learning_rate(cfg, step - 1),
                   "clips_per_s": f"{rate:.2f}", "elapsed_s": f"{now - t0:.1f}"}
            if run.val_clips is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                run.val = validate(encoder, run.val_clips, centroids, run.prior, cfg)
                row |= {k: f"{v:.5f}" for k, v in run.val.items()}
            metrics.write(row)
            if "val_loss" in row or step == cfg.steps:  # the curves, beside metrics.csv
                plot_training(out / "metrics.csv", out / "metrics.png")
            if board is not None:
                for key, value in row.items():
                    if key != "step":
                        board.add_scalar(key, float(value), step)
            tick, clips_seen = time.perf_counter(), 0
        # The first checkpoint's preview too: a short run shows what it learned.
        first = min(cfg.checkpoint_every, cfg.steps)
        if rank == 0 and (step % cfg.preview_every == 0 or step in (first, cfg.steps)):
            lightness = rgb_to_lab(clips[0, -1:].float() / 255)[0, :1].cpu()
            save_preview(out / "previews" / f"{step:08d}.png", lightness,
                         probs[0].detach().float().cpu(),
                         (classes[0, -1] if target is None else target[0]).cpu(),
                         centroids.cpu())
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            run.checkpoint(step)
            if run.demo is not None:
                run.score = score_on_demo(run.demo, encoder, dev)
                _say(run.bar, checkpoint_line(step, run.score, run.loss, run.val))
        if stop["signal"] is not None:
            if step % cfg.checkpoint_every:
                run.checkpoint(step)
            log.warning("stopped by signal %s at step %d; resume with --resume",
                        stop["signal"], step)
            break


def _say(bar: tqdm, line: str) -> None:
    """An info line above the progress bar, or logged when there is none."""
    if bar.disable:
        log.info(line)
    else:
        bar.write(line, file=sys.stderr)


def _finish(run: _Run, previous: dict) -> None:
    """Close the progress bar and TensorBoard's events, stop the data workers, restore signal
    handlers, leave DDP."""
    if run.bar is not None:
        run.bar.close()
    if run.board is not None:
        run.board.close()
    # The workers ignore SIGTERM (_leave_signals_to_main), which is how multiprocessing's
    # exit handler stops daemonic children: left to it, an exit could wait on them forever.
    if getattr(run.loader, "_iterator", None) is not None:
        run.loader._iterator._shutdown_workers()
    for s, handler in previous.items():
        signal.signal(s, handler)
    if run.world > 1:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class _RankSampler(Sampler[int]):
    """This rank's sample indices for steps [start, steps), in order."""

    def __init__(self, start: int, steps: int, world: int, rank: int, per_rank: int) -> None:
        self.start, self.steps, self.world, self.rank, self.per_rank = (
            start, steps, world, rank, per_rank)

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.per_rank
            yield from range(base, base + self.per_rank)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.per_rank
