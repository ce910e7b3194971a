"""Lab conversion against scikit-image, and k-means / quantization on known clusters."""

import numpy as np
import pytest
import torch

from colortrack.color import kmeans, lab_to_rgb, lightness, quantize, rgb_to_lab


def test_lab_matches_skimage():
    skimage = pytest.importorskip("skimage.color")
    rgb = torch.rand(2, 3, 8, 9, dtype=torch.float64)
    ours = rgb_to_lab(rgb).permute(0, 2, 3, 1).numpy()
    reference = np.stack([skimage.rgb2lab(x.permute(1, 2, 0).numpy()) for x in rgb])
    assert np.abs(ours - reference).max() < 1e-3


def test_lab_known_values_and_round_trip():
    white_black = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    lab = rgb_to_lab(white_black)
    assert torch.allclose(lab[0, :, 0, 0], torch.tensor([100.0, 0.0, 0.0]), atol=1e-2)
    assert torch.allclose(lab[0, :, 0, 1], torch.zeros(3), atol=1e-4)
    rgb = torch.rand(4, 3, 5, 5)
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1e-4


def test_kmeans_finds_known_clusters_and_quantize_assigns_them():
    torch.manual_seed(0)
    centers = torch.tensor([[-40.0, 20.0], [0.0, 0.0], [30.0, -50.0]])
    points = torch.cat([c + torch.randn(200, 2) for c in centers])
    found = kmeans(points, 3, seed=1)
    assert torch.allclose(found, centers, atol=0.5)  # sorted by a, like the centers above
    ab = centers.T.reshape(1, 2, 1, 3)
    assert quantize(ab, found).flatten().tolist() == [0, 1, 2]


def test_lightness_of_bytes_matches_the_full_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [10, 3, 1]]  # black, white, the linear segment
    full = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None])[0, 0]
    assert (lightness(rgb) - full).abs().max() < 1e-4
