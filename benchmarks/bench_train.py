"""Training speed per preset on this machine: clips/s of the training step and of the data.

    python benchmarks/bench_train.py                    # presets cpu and paper
    python benchmarks/bench_train.py --quick            # fewer steps and items (< 1 minute)
    python benchmarks/bench_train.py --presets cpu --steps 10 --items 200

Step: one training step as `colortrack train` does it (uint8 clips -> Lab + color classes,
encoder forward, colorization loss, backward, Adam step) on random clips of the preset's size and
refs, in train mode; `paper` uses a smaller batch on CPU (--paper-batch). Its FLOPs are counted
once with torch's FlopCounterMode (forward + backward). With --device cuda, clips are made on the
GPU (no host-to-device copy), the step runs in bf16 autocast as `colortrack train` does there
and `paper` trains at its real batch (32). Data: `ClipDataset(...)[i]` on
$COLORTRACK_DATA/train-videos with the preset's TrainConfig, in this process (training runs
`workers` of these in parallel). Inference: trunk + one head step on a 480p frame with the
encoder as tracking runs it (BatchNorm folded, channels-last), in fp32 and, where the CPU has
native bfloat16, as a bf16 copy (as `FrameEncoder` runs it); its GFLOPs from
`model.gflops_per_frame`. "% of peak" compares
achieved GFLOP/s with the best of 5 n x n matmuls of the same precision (n = 2048 on a CPU,
8192 on a GPU; training: fp32 on a CPU, bf16 on a GPU).
Timings are wall clock: noisy when other jobs share the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from colortrack.config import preset
from colortrack.model.checkpoint import load_model
from colortrack.model.device import native_bf16
from colortrack.model.network import (
    Encoder,
    colorization_loss,
    fused_for_inference,
    gflops_per_frame,
)
from colortrack.training.clips import ClipDataset, find_videos
from colortrack.training.train import to_lab_batch

ROOT = Path(__file__).resolve().parents[1]
# The benchmark folder (docs/data.md): $COLORTRACK_DATA, else ./data.
VIDEOS = Path(os.environ.get("COLORTRACK_DATA", "data")) / "train-videos"
CPU = torch.device("cpu")


def best_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1,
                 budget: float = 0.0, device: torch.device = CPU) -> float:
    """The fastest of `repeats` timed calls after `warmup` untimed ones; cheap calls are
    repeated further (up to 10) until `budget` seconds have been spent timing. On a GPU each
    call is timed to the end of its kernels."""
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < budget and len(times) < 10):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_size(device: torch.device) -> int:
    """The side n of the peak-measuring matmul: 2048 on a CPU, 8192 on a GPU (smaller ones
    leave it idle)."""
    return 8192 if device.type == "cuda" else 2048


def matmul_gflops(dtype: torch.dtype = torch.float32, device: torch.device = CPU,
                  repeats: int = 5) -> float:
    """Measured GFLOP/s of an n x n @ n x n matmul in `dtype` (best of `repeats`)."""
    n = matmul_size(device)
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats, device=device) / 1e9


def inference(encoder: Encoder, repeats: int, dtype: torch.dtype, device: torch.device) -> float:
    """Seconds to embed one 480p frame (trunk + one head step) as tracking does, in `dtype`."""
    fused = fused_for_inference(encoder).to(device, dtype)
    frame = (torch.rand(1, 1, 480, 856, device=device) * 100).contiguous(
        memory_format=torch.channels_last)

    @torch.inference_mode()
    def step() -> None:
        fused.head.step(fused.features(frame), None)

    return best_seconds(step, repeats, budget=3.0, device=device)


def training(name: str, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """(GFLOPs, seconds) of one training step of preset `name` at batch size `batch`."""
    cfg = preset(name)
    torch.manual_seed(0)
    encoder = Encoder(cfg.model).train().to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=cfg.train.lr)
    _, centroids, _ = load_model()  # the shipped model's 16 color clusters
    centroids = centroids.to(device)
    shape = (batch, cfg.train.refs + 1, 3, cfg.train.size, cfg.train.size)
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    amp = device.type == "cuda"  # as `colortrack train` runs

    def step() -> None:
        lightness, classes, _ = to_lab_batch(clips, centroids)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = encoder(lightness)
        loss, _, _ = colorization_loss(embeddings.float(), classes, cfg.model.num_colors,
                                       cfg.train.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9, best_seconds(step, repeats, warmup=0, device=device)


def data(name: str, videos: list[Path], items: int) -> tuple[float, float]:
    """(seconds to build the dataset, seconds per `dataset[i]`) for preset `name`."""
    start = time.perf_counter()
    dataset = ClipDataset(videos, preset(name).train, length=10**9)
    built = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(items):
        dataset[i]
    return built, (time.perf_counter() - start) / items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu,paper", help="comma-separated")
    parser.add_argument("--paper-batch", type=int, help="batch for `paper` (default: 4 on a CPU, "
                        "--quick 1; 32 on a GPU)")
    parser.add_argument("--steps", type=int, help="timed training steps (best of; default 5)")
    parser.add_argument("--items", type=int, help="dataset items to time (default 100)")
    parser.add_argument("--videos", type=Path, default=VIDEOS, help="training videos folder")
    parser.add_argument("--max-videos", type=int, help="use only the first N videos")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    parser.add_argument("--quick", action="store_true",
                        help="1 step, paper batch 1, 20 items, 8 videos")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (1 if args.quick else 5)
    items = args.items or (20 if args.quick else 100)
    videos = find_videos([args.videos])[: args.max_videos or (8 if args.quick else None)]
    device = torch.device(args.device)
    bf16 = native_bf16(device)
    peak = matmul_gflops(torch.float32, device)
    peak16 = matmul_gflops(torch.bfloat16, device) if bf16 else float("nan")
    train_peak = peak16 if device.type == "cuda" else peak  # the precision training runs in
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} torch threads")
    n = matmul_size(device)
    print(f"{where}; {n}^3 matmul (best of 5) = 100% peak: fp32 "
          f"{peak:.1f} GFLOP/s, bf16 {peak16:.1f} GFLOP/s{'' if bf16 else ' (not native)'}; "
          f"training: best of {steps} steps; inference: best of {steps}+ (up to 10 within 3 s)")
    print(f"{'preset':<7}{'params M':>9}{'GFLOP/480p':>11}{'ms fp32':>8}{'% peak':>7}"
          f"{'ms bf16':>8}{'% peak':>7}{'batch':>6}{'GFLOP/step':>11}{'s/step':>7}"
          f"{'clips/s':>8}{'clips/h':>8}{'% peak':>7}{'data build s':>13}{'data clips/s':>13}")
    for name in args.presets.split(","):
        encoder = Encoder(preset(name).model).eval()
        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        gflops = gflops_per_frame(encoder)
        fp32 = inference(encoder, steps, torch.float32, device)
        half = inference(encoder, steps, torch.bfloat16, device) if bf16 else float("nan")
        paper_batch = args.paper_batch or (
            preset(name).train.batch if device.type == "cuda" else 1 if args.quick else 4)
        batch = paper_batch if name == "paper" else preset(name).train.batch
        train_gflop, step_s = training(name, batch, steps, device)
        built, per_item = data(name, videos, items)
        print(f"{name:<7}{params:>9.2f}{gflops:>11.2f}{1e3 * fp32:>8.0f}"
              f"{100 * gflops / fp32 / peak:>7.1f}{1e3 * half:>8.0f}"
              f"{100 * gflops / half / peak16:>7.1f}{batch:>6}{train_gflop:>11.1f}"
              f"{step_s:>7.2f}{batch / step_s:>8.2f}{3600 * batch / step_s:>8.0f}"
              f"{100 * train_gflop / step_s / train_peak:>7.1f}{built:>13.1f}{1 / per_item:>13.1f}",
              flush=True)
    print(f"data: {len(videos)} videos from {args.videos}, {items} items, one process; "
          "`cpu` decodes every video once at build (cache_short_side), `paper` seeks per clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
