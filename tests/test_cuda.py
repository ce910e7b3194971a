"""The CUDA paths against the definition and the CPU's results.

Skipped where torch sees no GPU (CI has none); run them on a GPU machine with
`python -m pytest tests/test_cuda.py`.
"""

import numpy as np
import pytest
import torch

from colortrack.cli import main
from colortrack.copy.propagate import propagate
from colortrack.data.annotations import write_mask
from colortrack.data.video import VideoReader
from colortrack.demo import demo_clip, score
from colortrack.model.checkpoint import load_model
from colortrack.track.tracking import Tracker, track_to_dir
from colortrack.training.train import run
from tests.test_propagation import context_of, naive_propagate
from tests.test_train import TINY, rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def on_gpu(memory):
    return [(keys.cuda(), labels.cuda()) for keys, labels in memory]


@pytest.mark.parametrize("radius,global_first,topk", [
    (3, True, 5), (2.5, False, 4), (0, True, 7), (4, False, None), (0, True, None)])
def test_propagate_on_cuda_matches_the_definition(radius, global_first, topk):
    torch.manual_seed(0)
    h, w = 11, 13
    memory = [(torch.randn(6, h, w), torch.rand(3, h, w)) for _ in range(3)]
    query = torch.randn(6, h, w)
    context = context_of(on_gpu(memory), 2, radius, global_first)
    fast = propagate(query.cuda(), context, temperature=0.5, topk=topk)
    slow = naive_propagate(query, memory, 0.5, topk, radius, global_first)
    assert fast.is_cuda
    assert torch.allclose(fast.cpu(), slow, atol=1e-4)


def test_bf16_choice_on_cuda_scores_in_float32():
    torch.manual_seed(4)
    h, w = 11, 13
    unit = [torch.nn.functional.normalize(torch.randn(16, h, w), dim=0) for _ in range(4)]
    memory = [(keys, torch.rand(3, h, w)) for keys in unit[:3]]
    exact = naive_propagate(unit[3], memory, 0.05, 5, 3, False)
    low = context_of(on_gpu(memory), 2, 3, False, scoring=torch.bfloat16)
    fast = propagate(unit[3].cuda(), low, temperature=0.05, topk=5).cpu()
    assert ((fast - exact).abs() < 1e-4).float().mean() > 0.9
    assert (fast - exact).abs().max() < 0.2


def test_tracking_the_demo_on_cuda_scores_as_on_the_cpu(tmp_path):
    video, truth = demo_clip()
    scores = {}
    for device in ("cpu", "cuda"):
        tracker = Tracker.from_pretrained(device=device)
        track_to_dir(tracker, video, truth[0], tmp_path / device, progress=False)
        j, f = score(tmp_path / device, truth)
        scores[device] = (j + f) / 2
    assert scores["cuda"] > 80
    assert abs(scores["cuda"] - scores["cpu"]) < 1.0


def test_cli_track_colorize_embed_on_cuda(moving_video, tmp_path):
    path, frames = moving_video
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    mask[10:30, 20:40] = 1
    write_mask(tmp_path / "first.png", mask)
    assert main(["-q", "track", str(path), "--mask", str(tmp_path / "first.png"), "--out",
                 str(tmp_path / "out"), "--device", "cuda"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == len(frames)
    from PIL import Image

    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    assert main(["-q", "colorize", str(path), "--reference", str(tmp_path / "ref.png"),
                 "--out", str(tmp_path / "color.mp4"), "--device", "cuda"]) == 0
    assert main(["-q", "embed", str(path), "--out", str(tmp_path / "embed.mp4"),
                 "--device", "cuda"]) == 0
    for name in ("color.mp4", "embed.mp4"):
        with VideoReader(tmp_path / name) as video:
            assert sum(1 for _ in video) == len(frames)


def test_training_on_cuda_then_resuming_on_the_cpu(videos, tmp_path):
    out = run([videos], preset="cpu", out=tmp_path / "run", steps=6, progress=False,
              overrides=TINY, device="cuda").out
    encoder, _, _ = load_model(out / "model.safetensors")
    assert next(encoder.parameters()).device.type == "cpu"
    run([videos], preset="cpu", out=out, steps=9, resume=True, progress=False)
    losses = [float(r["loss"]) for r in rows(out)]
    assert len(losses) == 9 and all(np.isfinite(losses))
