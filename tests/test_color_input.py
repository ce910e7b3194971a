"""Color-aware models: Lab input, hidden chroma in training, training as tracking runs, and the
model+pixels tracker."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from colortrack.color import hide_chroma, rgb_to_lab
from colortrack.config import ModelConfig, PropagationConfig, TrainConfig, preset
from colortrack.errors import UsageError
from colortrack.model.checkpoint import default_model_path, load_model, save_model
from colortrack.model.features import FrameEncoder, ModelAndPixels, fast_lab
from colortrack.model.network import Encoder, colorization_loss
from colortrack.track.propagator import LearnedPropagator
from colortrack.track.tracking import Tracker
from colortrack.training.train import draw_hidden, initial_model, run, to_lab_batch

from .test_learned import iou, square_on_texture
from .test_train import TINY, rows

LAB = ModelConfig(**{**vars(preset("cpu").model), "input": "Lab"})


def random_frames(count=4, size=(40, 48), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def test_fast_lab_is_the_exact_conversion_to_half_a_unit():
    frame = random_frames(1)[0]
    exact = rgb_to_lab(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[0]
    fast = fast_lab(frame)
    assert (fast[0] - exact[0]).abs().max() < 1e-3  # L as the gray models see it
    assert (fast[1:] - exact[1:]).abs().max() < 0.5


def test_shipped_gray_model_files_still_load_as_L_models():
    with safe_open(str(default_model_path()), framework="pt") as handle:
        saved = json.loads(handle.metadata()["model_config"])
    assert "input" not in saved  # written before the setting existed
    encoder, _, _ = load_model()
    assert encoder.cfg.input == "L" and encoder.trunk.stem[0].in_channels == 1


def test_model_files_record_their_input(tmp_path):
    encoder = Encoder(LAB)
    save_model(tmp_path / "m.safetensors", encoder, torch.zeros(16, 2))
    loaded, _, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.cfg.input == "Lab" and loaded.trunk.stem[0].in_channels == 3
    with pytest.raises(UsageError, match="input"):
        ModelConfig(input="RGB")


def test_hidden_chroma_never_reaches_the_encoder():
    clips = torch.from_numpy(random_frames(4)).permute(0, 3, 1, 2)[None].repeat(3, 1, 1, 1, 1)
    centroids = torch.randn(16, 2) * 30
    hidden = torch.tensor([[True, False], [False, True], [True, True]])
    inputs, _, _ = to_lab_batch(clips, centroids, "Lab", hidden)
    lab = rgb_to_lab(clips[0].float() / 255)
    for clip, hides in zip(inputs, hidden, strict=True):
        scale = 3 / (3 - int(hides.sum()))
        assert (clip[:, 1:][:, hides] == 0).all()  # in every frame, references and target
        kept = torch.cat([torch.tensor([True]), ~hides])
        expected = (lab - torch.tensor([50.0, 0, 0]).view(3, 1, 1)) * scale
        torch.testing.assert_close(clip[:, kept] - torch.tensor([50.0, 0, 0])[kept].view(-1, 1, 1),
                                   expected[:, kept], atol=1e-3, rtol=1e-5)


def test_hidden_chroma_can_leave_L_at_its_scale():
    lab = rgb_to_lab(torch.from_numpy(random_frames(1)).permute(0, 3, 1, 2).float() / 255)
    kept = hide_chroma(lab, torch.tensor([True, False]), rescale=False)
    assert torch.equal(kept[:, :1], lab[:, :1]) and (kept[:, 1] == 0).all()
    torch.testing.assert_close(kept[:, 2], lab[:, 2])
    encoder = Encoder(dataclasses.replace(LAB, rescale_hidden=False))
    assert FrameEncoder(encoder, gray=True).rescale is False


def test_the_target_color_is_reached_only_by_copying():
    """The prediction is a mix of the references' colors: the target's own true colors change
    the loss, never the prediction."""
    torch.manual_seed(0)
    embeddings = torch.randn(2, 4, 8, 5, 5)
    colors = torch.randint(0, 8, (2, 4, 5, 5))  # the references use colors 0-7 only
    recolored = colors.clone()
    recolored[:, -1] = torch.randint(8, 16, (2, 5, 5))
    loss_a, _, probs_a = colorization_loss(embeddings, colors, 16, 1.0)
    loss_b, _, probs_b = colorization_loss(embeddings, recolored, 16, 1.0)
    assert torch.equal(probs_a, probs_b) and loss_a != loss_b
    assert probs_a[:, 8:].abs().max() == 0  # no color the references lack


def test_colorize_shows_a_color_model_its_frames_with_chroma_hidden():
    """A color model colorizing gray video sees every frame, the color reference too, with its
    chroma hidden, as training showed them; tracking sees full color."""
    frame = random_frames(1)[0]
    encoder = Encoder(LAB).eval()
    hidden = FrameEncoder(encoder, precision="fp32", gray=True).image(frame)[0]
    full = FrameEncoder(encoder, precision="fp32").image(frame)[0]
    h, w = frame.shape[:2]
    assert (hidden[1:] == 0).all() and full[1:].abs().amax() > 10
    torch.testing.assert_close(hidden[0, :h, :w], 50 + 3 * (fast_lab(frame)[0] - 50))
    torch.testing.assert_close(full[:, :h, :w], fast_lab(frame))


def test_draw_hidden_hides_a_or_b_or_both_at_the_set_odds():
    hidden = draw_hidden(30_000, 1 / 3, torch.Generator().manual_seed(0))
    both = hidden.all(1).float().mean()
    assert hidden.any(1).all() and abs(both - 1 / 3) < 0.02
    assert abs(hidden[:, 0].float().mean() - 2 / 3) < 0.02


def test_training_copies_within_the_radius_and_scores_at_full_resolution():
    torch.manual_seed(0)
    embeddings = torch.randn(1, 2, 4, 6, 6)
    colors = torch.zeros(1, 2, 6, 6, dtype=torch.long)
    colors[0, 0, :, 3:] = 1  # the reference's right half has color 1
    _, _, local = colorization_loss(embeddings, colors, 2, 0.05, normalize=True, radius=2)
    assert local[0, 1, :, :2].max() < 1e-6  # the left columns cannot reach color 1
    full = torch.zeros(1, 48, 48, dtype=torch.long)
    _, _, up = colorization_loss(embeddings, colors, 2, 1.0, full_res=full)
    assert up.shape == (1, 2, 48, 48)
    torch.testing.assert_close(up.sum(1), torch.ones(1, 48, 48))


def test_a_lab_model_started_from_a_gray_one_embeds_exactly_as_it(tmp_path):
    torch.manual_seed(0)
    gray = Encoder(preset("cpu").model).eval()
    save_model(tmp_path / "gray.safetensors", gray, torch.randn(16, 2))
    color, _ = initial_model(str(tmp_path / "gray.safetensors"), LAB)
    frames = random_frames()
    a = list(FrameEncoder(gray, precision="fp32").stream(iter(frames)))
    b = list(FrameEncoder(color.eval(), precision="fp32").stream(iter(frames)))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    with pytest.raises(UsageError, match="architecture"):
        initial_model(str(tmp_path / "gray.safetensors"), ModelConfig(input="Lab"))


def test_color_training_runs_from_a_gray_model_and_the_result_tracks(videos, tmp_path):
    gray = run([videos], preset="cpu", out=tmp_path / "gray", steps=3, progress=False,
               overrides=TINY).out
    color = run([videos], preset="cpu", out=tmp_path / "color", steps=6, progress=False,
                overrides=[*TINY, "input=Lab", f"init={gray / 'model.safetensors'}",
                           "normalize=true", "temperature=0.05", "radius=3",
                           "full_res_loss=true", "holdout=texture1"]).out
    assert np.isfinite([float(r["loss"]) for r in rows(color)]).all()
    encoder, centroids, _ = load_model(color / "model.safetensors")
    assert encoder.cfg.input == "Lab"
    assert torch.equal(centroids, load_model(gray / "model.safetensors")[1])  # same classes
    with pytest.raises(UsageError, match="resume"):
        run([videos], out=color, steps=8, resume=True, progress=False, overrides=["input=L"])
    video, masks = square_on_texture()
    tracker = Tracker(LearnedPropagator(encoder, PropagationConfig(context=3, topk=5, radius=4)))
    assert len(list(tracker.track(iter(video), masks[0]))) == len(video)


def test_model_and_pixels_scores_are_the_sum_of_both_affinities():
    torch.manual_seed(0)
    cfg = PropagationConfig(temperature=0.05, color_temperature=50.0, precision="fp32")
    encoder = Encoder(preset("cpu").model).eval()
    fused = ModelAndPixels(FrameEncoder(encoder, precision="fp32"), cfg)
    frames = random_frames(2)
    g = list(fused.stream(iter(frames)))
    f = list(FrameEncoder(encoder, precision="fp32").stream(iter(frames)))
    p = list(fused.pixels.stream(iter(frames)))
    flat = [x.flatten(1).T.double() for x in (*g, *f, *p)]
    g0, g1, f0, f1, p0, p1 = flat
    fused_scores = -torch.cdist(g1, g0) ** 2 / 2 / cfg.temperature
    summed = (f1 @ f0.T / cfg.temperature - torch.cdist(p1, p0) ** 2 / (2 * cfg.color_temperature)
              - 1 / cfg.temperature)
    torch.testing.assert_close(fused_scores, summed, atol=1e-3, rtol=1e-6)


def test_model_and_pixels_follows_a_colored_square():
    video, masks = square_on_texture()
    tracker = Tracker(LearnedPropagator.model_and_pixels(
        None, PropagationConfig(context=3, topk=5, radius=4)))
    results = list(tracker.track(iter(video), masks[0]))
    overlaps = [iou(ids == 1, mask == 1) for (_, ids), mask in zip(results, masks, strict=True)]
    assert min(overlaps) > 0.7


def test_training_settings_are_checked():
    with pytest.raises(UsageError, match="radius"):
        TrainConfig(radius=-1)
    with pytest.raises(UsageError, match="drop_both"):
        TrainConfig(drop_both=1.5)


def test_colorize_and_embed_take_a_color_model(videos, tmp_path):
    from colortrack.cli import main
    from colortrack.data.video import VideoReader

    save_model(tmp_path / "lab.safetensors", Encoder(LAB), torch.randn(16, 2) * 20)
    video = videos / "texture0.mp4"
    with VideoReader(video) as reader:
        Image.fromarray(next(iter(reader))).save(tmp_path / "reference.png")
    model = ["--model", str(tmp_path / "lab.safetensors")]
    assert main(["-q", "colorize", str(video), "--reference", str(tmp_path / "reference.png"),
                 "--out", str(tmp_path / "colored.mp4"), *model]) == 0
    assert main(["-q", "embed", str(video), "--out", str(tmp_path / "embedding.mp4"), *model]) == 0
    for name in ("colored.mp4", "embedding.mp4"):
        with VideoReader(tmp_path / name) as reader:
            assert reader.info.num_frames == 40
