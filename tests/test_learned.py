"""The learned propagator end to end on small clips: shipped model, pixel baseline, CLI paths."""

import threading

import numpy as np
import pytest
import torch

from colortrack.cli import main
from colortrack.config import PropagationConfig
from colortrack.data.video import VideoReader
from colortrack.model.checkpoint import default_model_path
from colortrack.model.device import one_frame_ahead
from colortrack.stages import timed
from colortrack.track.propagator import LearnedPropagator
from colortrack.track.tracking import Tracker

SMALL = PropagationConfig(context=3, topk=5, radius=4, temperature=0.05)


def square_on_texture(frames=8, size=(72, 96), step=3):
    """A red square sliding right over a gray texture, and its first-frame mask."""
    rng = np.random.default_rng(0)
    background = np.repeat(rng.integers(60, 160, size, dtype=np.uint8)[..., None], 3, axis=2)
    video, masks = [], []
    for t in range(frames):
        frame, mask = background.copy(), np.zeros(size, np.uint8)
        x = 10 + step * t
        frame[24:48, x:x + 24] = (220, 30, 30)
        mask[24:48, x:x + 24] = 1
        video.append(frame)
        masks.append(mask)
    return video, masks


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_pixel_features_follow_a_colored_square():
    video, masks = square_on_texture()
    tracker = Tracker(LearnedPropagator.pixels(PropagationConfig(context=3, topk=5, radius=4,
                                                                 temperature=50.0)))
    results = list(tracker.track(iter(video), masks[0]))
    assert len(results) == len(video)
    assert iou(results[-1][1] == 1, masks[-1] == 1) > 0.7


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_shipped_model_tracks_and_keeps_shapes(moving_video):
    path, frames = moving_video
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    mask[10:30, 20:40] = 1
    tracker = Tracker.from_pretrained(propagation=SMALL)
    out = list(tracker.track(path, mask))
    assert [i for i, _ in out] == list(range(len(frames)))
    assert all(ids.shape == mask.shape for _, ids in out)
    assert (out[1][1] == 1).sum() > 0


def test_labels_are_upsampled_bilinearly_with_pixel_centres_aligned():
    from colortrack.track.propagator import grid_to_labels

    for channels in (1, 3, 16):
        grid = torch.rand(channels, 5, 7)
        expected = torch.nn.functional.interpolate(grid[None], scale_factor=8, mode="bilinear",
                                                   align_corners=False)[0, :, :37, :50]
        np.testing.assert_allclose(grid_to_labels(grid, 8, 37, 50), expected.numpy(), atol=1e-6)


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test (set_threads(n)); the earlier count comes back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [2, 3])
def test_features_come_from_another_thread_with_half_the_torch_threads(threads, torch_threads):
    seen = []

    def features():
        seen.append((threading.get_ident(), torch.get_num_threads()))
        yield 1
        raise ValueError("a damaged frame")

    torch_threads(threads)
    with pytest.raises(ValueError, match="a damaged frame"):  # raised where they are read
        with one_frame_ahead(features(), torch.device("cpu")) as ahead:
            assert next(ahead) == 1
            assert torch.get_num_threads() == threads // 2
            next(ahead)
    assert torch.get_num_threads() == threads
    [(thread, encoder_threads)] = seen
    assert thread != threading.get_ident() and encoder_threads == (threads + 1) // 2


def test_with_one_torch_thread_features_come_from_the_caller_s_thread(torch_threads):
    torch_threads(1)
    threads = []
    features = (threads.append(threading.get_ident()) or i for i in range(3))
    with one_frame_ahead(features, torch.device("cpu")) as ahead:
        assert list(ahead) == [0, 1, 2]
    assert threads == [threading.get_ident()] * 3 and torch.get_num_threads() == 1


def test_features_not_ahead_come_from_the_caller_s_thread_with_all_its_threads(torch_threads):
    torch_threads(2)
    seen = []
    features = (seen.append((threading.get_ident(), torch.get_num_threads())) or i
                for i in range(3))
    with one_frame_ahead(features, torch.device("cpu"), ahead=False) as ahead:
        assert list(ahead) == [0, 1, 2]
    assert seen == [(threading.get_ident(), 2)] * 3


def test_the_encoder_runs_ahead_only_where_it_and_the_copy_take_about_as_long():
    def ahead(precision="auto", **settings):
        cfg = PropagationConfig(precision=precision, **settings)
        return LearnedPropagator.random(cfg).embeds_ahead

    bf16 = LearnedPropagator.random().frames.dtype == torch.bfloat16  # where it is native
    assert ahead() == bf16 and ahead("bf16")
    assert not ahead("fp32")  # a float32 encoder takes far longer than the copy
    assert not ahead("bf16", global_first=True)  # a dense first frame: the copy far longer
    assert not ahead("bf16", radius=0)
    assert not LearnedPropagator.pixels().embeds_ahead  # raw pixels: no encoder to speak of


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_the_stage_clock_times_the_encoder_on_its_own_thread(moving_video):
    path, frames = moving_video
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    mask[10:30, 20:40] = 1
    with timed() as seconds:
        list(Tracker.from_pretrained(propagation=SMALL).track(path, mask))
        with pytest.raises(RuntimeError, match="already"):
            timed().__enter__()
    assert {"encode", "copy", "upsample", "argmax"} <= seconds.keys()
    assert all(value > 0 for value in seconds.values())


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_cli_model_track_colorize_embed(moving_video, tmp_path, tmp_path_factory):
    path, frames = moving_video
    from colortrack.data.annotations import write_mask

    mask = np.zeros(frames[0].shape[:2], np.uint8)
    mask[10:30, 20:40] = 1
    write_mask(tmp_path / "first.png", mask)
    assert main(["-q", "track", str(path), "--mask", str(tmp_path / "first.png"), "--out",
                 str(tmp_path / "out"), "--set", "context=2", "--set", "radius=4"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == len(frames)
    from PIL import Image

    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    assert main(["-q", "colorize", str(path), "--reference", str(tmp_path / "ref.png"),
                 "--out", str(tmp_path / "color.mp4")]) == 0
    assert main(["-q", "embed", str(path), "--out", str(tmp_path / "embed.mp4")]) == 0
    with VideoReader(tmp_path / "color.mp4") as video:
        assert sum(1 for _ in video) == len(frames)
    with VideoReader(tmp_path / "embed.mp4") as video:
        assert video.info.width == 2 * frames[0].shape[1]


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_colorize_a_video_whose_size_is_not_a_multiple_of_the_stride(make_video, tmp_path):
    from PIL import Image

    from colortrack.track.colorize import colorize_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (50, 70, 3), np.uint8) for _ in range(3)]
    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    out = colorize_video(make_video(frames), tmp_path / "ref.png", tmp_path / "out.mp4",
                         progress=False)
    with VideoReader(out) as video:
        assert (video.info.width, video.info.height) == (70, 50)
        assert sum(1 for _ in video) == 3


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_bf16_embeddings_stay_close_to_fp32():
    video, _ = square_on_texture(frames=2)
    embed = {p: LearnedPropagator.from_checkpoint(propagation=PropagationConfig(precision=p))
             for p in ("fp32", "bf16")}
    a, b = (list(embed[p].frames.stream(iter(video)))[-1] for p in ("fp32", "bf16"))
    assert a.dtype == b.dtype == torch.float32
    assert float((a * b).sum(0).min()) > 0.99  # unit vectors: cosine similarity per cell


def test_unknown_precision_is_a_usage_error():
    from colortrack.errors import UsageError

    with pytest.raises(UsageError, match="precision"):
        LearnedPropagator.random(PropagationConfig(precision="fp8"))


def test_each_precision_names_its_window_arithmetic(monkeypatch):
    from colortrack.errors import UsageError
    from colortrack.model.device import choice_dtype

    cpu = torch.device("cpu")
    assert choice_dtype("fp32", cpu) == torch.float32
    assert choice_dtype("bf16", cpu) == torch.bfloat16
    assert choice_dtype("int8", cpu) == torch.int8
    # int8 on every CPU: where torch._int_mm is slow or missing, float32 GEMMs compute the same
    # sums (tests/test_arithmetic.py).
    assert choice_dtype("auto", cpu) == torch.int8
    monkeypatch.setattr("colortrack.model.device.native_int8", lambda: False)  # PyTorch < 2.2
    assert choice_dtype("int8", cpu) == torch.int8
    with pytest.raises(UsageError, match="CPUs only"):  # refused before CUDA is touched
        choice_dtype("int8", torch.device("cuda"))
    # Raw pixels (norms up to 1e4) and copies without top-k always score in float32.
    assert LearnedPropagator.pixels().scoring == torch.float32
    assert LearnedPropagator.random(PropagationConfig(topk=None)).scoring == torch.float32
    assert LearnedPropagator.random(PropagationConfig(precision="int8")).scoring == torch.int8


def test_nearly_parallel_embeddings_are_not_ranked_in_int8():
    from colortrack.model.device import PARALLEL

    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    untrained = LearnedPropagator.random()  # embeddings of every cell nearly the same vector
    key = next(untrained.frames.stream(iter([frame])))
    spread = float(torch.nn.functional.normalize(key, dim=0).mean((1, 2)).norm())
    assert spread > PARALLEL
    assert untrained.scoring == torch.int8 and untrained.scoring_for(key) != torch.int8
    asked = LearnedPropagator.random(PropagationConfig(precision="int8"))
    assert asked.scoring_for(key) == torch.int8  # an explicit choice is honoured
    spread_out = torch.nn.functional.normalize(torch.randn(key.shape), dim=0)
    assert untrained.scoring_for(spread_out) == untrained.scoring


@pytest.mark.parametrize("global_first", [False, True])
@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped model")
def test_the_tracker_gives_the_reference_propagation_in_float32(global_first):
    """`reference.propagate`, the protocol written plainly, is the spec of the fast path."""
    from colortrack.copy import reference
    from colortrack.copy.context import CONSTANT
    from colortrack.track.propagator import grid_to_labels, labels_to_grid

    video, masks = square_on_texture(frames=12, size=(96, 160))
    first = np.stack([masks[0] == 0, masks[0] == 1]).astype(np.float32)
    cfg = PropagationConfig(context=3, topk=5, radius=4, precision="fp32",
                            global_first=global_first)
    propagator = LearnedPropagator.from_checkpoint(None, cfg)
    fast = list(propagator.propagate(iter(video), first))
    features = list(propagator.frames.stream(iter(video)))
    grids = reference.propagate(features, labels_to_grid(first, 8, features[0].device), cfg)
    plain = [grid_to_labels(g, 8, *first.shape[1:]) for g in grids]
    assert len(fast) == len(plain) == len(video) - 1
    for a, b in zip(fast, plain, strict=True):  # tiles of one label get its midpoint
        np.testing.assert_allclose(a, b, atol=CONSTANT / 2 + 1e-5)
        assert (a.argmax(0) == b.argmax(0)).mean() > 0.999
