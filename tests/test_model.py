"""The encoder's shapes, its frame-by-frame streaming, and model files."""

import dataclasses

import pytest
import torch

from colortrack.config import PRESETS
from colortrack.errors import ColortrackError
from colortrack.model.checkpoint import load_model, save_model
from colortrack.model.network import Encoder, colorization_loss


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return Encoder(PRESETS["cpu"].model).eval()


def test_embeddings_are_64d_at_stride_8(encoder):
    out = encoder(torch.rand(2, 4, 1, 64, 96) * 100)
    assert out.shape == (2, 4, 64, 8, 12)


def test_streaming_head_equals_whole_clip(encoder):
    clip = torch.rand(1, 5, 1, 32, 48) * 100
    with torch.no_grad():
        whole = encoder(clip)[0]
        features = encoder.features(clip[0])
        cache, steps = None, []
        for t in range(5):
            out, cache = encoder.head.step(features[t:t + 1], cache)
            steps.append(out[0])
    assert torch.allclose(torch.stack(steps), whole, atol=1e-5)


def test_head_is_causal(encoder):
    clip = torch.rand(1, 4, 1, 32, 32) * 100
    changed = clip.clone()
    changed[:, 3] = 0
    with torch.no_grad():
        assert torch.allclose(encoder(clip)[:, :3], encoder(changed)[:, :3], atol=1e-6)


def test_loss_is_low_when_colors_can_be_copied():
    # Identical embeddings for identical locations: copying finds the right color.
    torch.manual_seed(0)
    emb = torch.randn(1, 1, 16, 4, 4).repeat(1, 4, 1, 1, 1) * 10
    colors = torch.randint(0, 16, (1, 1, 4, 4)).repeat(1, 4, 1, 1)
    loss, accuracy, probs = colorization_loss(emb, colors, 16, 1.0)
    assert accuracy.item() == 1.0 and loss.item() < 0.01
    assert probs.shape == (1, 16, 4, 4)


def test_model_file_round_trip_and_errors(encoder, tmp_path):
    centroids = torch.randn(16, 2)
    path = tmp_path / "m.safetensors"
    save_model(path, encoder, centroids, step=7)
    loaded, loaded_centroids, info = load_model(path)
    assert info == {"step": 7} and torch.equal(loaded_centroids, centroids)
    for a, b in zip(loaded.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = Encoder(dataclasses.replace(PRESETS["cpu"].model, embed_dim=32))
    save_model(tmp_path / "other.safetensors", other, centroids)
    assert load_model(tmp_path / "other.safetensors")[0].cfg.embed_dim == 32
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ColortrackError, match="bad.safetensors"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ColortrackError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_fused_encoder_gives_the_same_embeddings(encoder):
    from colortrack.model.network import fused_for_inference

    for module in encoder.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    clip = torch.rand(1, 3, 1, 40, 56) * 100
    fused = fused_for_inference(encoder)
    with torch.no_grad():
        assert torch.allclose(fused(clip), encoder(clip), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_relu_through_the_sign_bit_is_relu(dtype):
    from colortrack.model.network import SignReLU

    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, float("inf"), -float("inf"), 3.5, -3.5])
    x = torch.cat([special, torch.randn(1000)]).to(dtype)
    assert torch.equal(SignReLU()(x.clone()), torch.relu(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(2, 2), (8, 12), (9, 12), (8, 7)])
def test_the_fused_stem_pools_exactly_as_max_pool_then_relu(dtype, size):
    from colortrack.model.network import PoolThenReLU

    x = torch.randn(2, 5, *size).to(dtype).contiguous(memory_format=torch.channels_last)
    pooled = PoolThenReLU()(x)
    assert torch.equal(pooled, torch.relu(torch.nn.functional.max_pool2d(x, 3, 2, 1)))
    assert pooled.is_contiguous(memory_format=torch.channels_last)
