"""Color: exact sRGB <-> CIE Lab (D65) in batched torch, and k-means quantization of the ab plane.

A gray model sees only L (a color model sees Lab with chroma hidden in training); both learn
by predicting which of K ab clusters each location has.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# sRGB (linear) -> XYZ, D65 white, as in IEC 61966-2-1.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPS = 6.0 / 29.0


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply the channel axis (-3) of (..., 3, H, W) by a 3x3 matrix."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x), x)


def _companding(t: torch.Tensor) -> torch.Tensor:
    """CIE's f(t): the cube root, linear near black, that maps XYZ / white to Lab."""
    return torch.where(t > _EPS**3, t.clamp_min(1e-12) ** (1 / 3), t / (3 * _EPS**2) + 4 / 29)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> Lab with L in [0, 100] and a, b roughly in [-110, 110]."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply(_RGB_TO_XYZ, linear) / _WHITE_D65.to(rgb).view(3, 1, 1)
    fx, fy, fz = _companding(xyz).unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def _luminance_tables() -> np.ndarray:
    """(1, 256, 3): each 8-bit R, G, B value's contribution to the luminance Y of `rgb_to_lab`,
    laid out as OpenCV's per-channel lookup table."""
    v = np.arange(256) / 255.0
    linear = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    table = (_RGB_TO_XYZ[1].numpy()[:, None] * linear[None]).astype(np.float32)
    return np.ascontiguousarray(table.T[None])


_LUMINANCE = _luminance_tables()
_SUM = np.ones((1, 3), np.float32)


def lightness(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 sRGB -> (H, W) float32 L of `rgb_to_lab` (to 1e-4), through per-byte
    tables and OpenCV's channel sum: a gray encoder sees only L, and this takes 0.9 ms at 480p
    on one thread (NumPy's float32 cube roots: PyTorch's powers took twice as long overall)."""
    parts = cv2.LUT(np.ascontiguousarray(rgb), _LUMINANCE)
    y = cv2.transform(parts, _SUM)
    f = np.where(y > _EPS**3, np.cbrt(y), y / (3 * _EPS**2) + 4 / 29)  # `_companding`
    return torch.from_numpy(f).mul_(116).sub_(16)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_lab`; the result is clipped to [0, 1]."""
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f > _EPS, f**3, 3 * _EPS**2 * (f - 4 / 29)) * _WHITE_D65.to(lab).view(3, 1, 1)
    linear = _apply(_XYZ_TO_RGB, xyz).clamp(0, 1)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055,
                      12.92 * linear)
    return rgb.clamp(0, 1)


def hide_chroma(lab: torch.Tensor, hidden: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """Lab (..., 3, H, W) with the chroma channels that `hidden` (..., 2) marks set to zero (no
    color), and with `rescale` the rest rescaled by 3 / (3 - hidden), as dropout does, about the
    encoder's input centre (L 50, ab 0): what a color model sees when training hides chroma."""
    kept = torch.cat([torch.ones_like(hidden[..., :1]), ~hidden], -1).float()  # (..., 3)
    if not rescale:
        return lab * kept[..., None, None]
    scale = (kept * 3 / kept.sum(-1, keepdim=True))[..., None, None]
    centre = torch.tensor([50.0, 0.0, 0.0], device=lab.device).view(3, 1, 1)
    return (lab - centre) * scale + centre


def kmeans(points: torch.Tensor, k: int, *, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding on (N, C) points; returns (k, C) centroids."""
    generator = torch.Generator().manual_seed(seed)
    points = points.double()
    first = torch.randint(len(points), (1,), generator=generator)
    centroids = points[first]
    for _ in range(1, k):
        distance = torch.cdist(points, centroids).min(dim=1).values ** 2
        pick = torch.multinomial(distance / distance.sum(), 1, generator=generator)
        centroids = torch.cat([centroids, points[pick]])
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        if torch.allclose(moved, centroids):
            break
        centroids = moved
    # Sort by a, then b, so the class order does not depend on the seed's luck.
    order = torch.argsort(centroids[:, 0] * 1000 + centroids[:, 1])
    return centroids[order].float()


def quantize(ab: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) ab values -> (B, H, W) index of the nearest centroid."""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    index = torch.cdist(flat.float(), centroids.to(flat.device).float()).argmin(dim=1)
    return index.view(ab.shape[0], ab.shape[2], ab.shape[3])
