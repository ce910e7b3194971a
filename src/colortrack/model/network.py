"""The encoder: gray (L) or color (Lab) frames -> 64-d embeddings at 1/8 resolution, and the
colorization loss.

A ResNet trunk (stride 8, later stages dilated instead of strided) embeds each frame; a temporal
head of dilated (1x3x3) spatial and (kx1x1) temporal 3D convolutions mixes neighbouring frames.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from colortrack.config import STRIDE, ModelConfig
from colortrack.copy.reference import FAR, copy_soft, dense_affinity


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(inp, out, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = nn.Identity()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False),
                                          nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on fresh outputs (as torchvision's ResNet): the same values, fewer large
        # allocations.
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)).add_(self.shortcut(x)))


class Trunk(nn.Module):
    """ResNet-18-style 2D trunk; the stem divides by 4, the stages' strides by 2 more."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.stem_channels, 7, 2, 3, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers: list[nn.Module] = []
        channels = cfg.stem_channels
        for out, blocks, stride, dilation in cfg.stages:
            for i in range(blocks):
                layers.append(BasicBlock(channels, out, stride if i == 0 else 1, dilation))
                channels = out
        self.stages = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class TemporalHead(nn.Module):
    """Dilated residual blocks, each a (1x3x3) spatial and a (kx1x1) temporal convolution, then a
    1x1 projection to the embedding. Works on (B, T, C, h, w).

    The 3D convolutions are written as 2D ones (frames folded into the batch; the k-frame temporal
    kernel as a 1x1 convolution over k stacked frames), which CPUs run several times faster. The
    temporal kernel is causal (a frame sees itself and the k-1 before it), so a video can be
    embedded frame by frame with a small cache: see `step`.
    """

    def __init__(self, inp: int, cfg: ModelConfig) -> None:
        super().__init__()
        c, self.k = cfg.head_channels, cfg.temporal_kernel
        self.inp = nn.Sequential(nn.Conv2d(inp, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True))
        self.spatial = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(c), nn.ReLU(True))
            for d in cfg.head_dilations
        )
        self.temporal = nn.ModuleList(
            nn.Sequential(nn.Conv2d(self.k * c, c, 1, bias=False), nn.BatchNorm2d(c))
            for _ in cfg.head_dilations
        )
        self.out = nn.Conv2d(c, cfg.embed_dim, 1)
        self.act = nn.ReLU(inplace=True)  # after each block's sum (`step`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = self.inp(x.flatten(0, 1))
        for spatial, temporal in zip(self.spatial, self.temporal, strict=True):
            y = spatial(x).view(b, t, *x.shape[1:])
            y = F.pad(y, (0, 0, 0, 0, 0, 0, self.k - 1, 0))  # zero frames before the first
            stacked = torch.cat([y[:, i:i + t] for i in range(self.k)], dim=2)  # (B, T, kC, h, w)
            x = F.relu(x + temporal(stacked.flatten(0, 1)))
        out = self.out(x)
        return out.view(b, t, *out.shape[1:])

    def step(self, x: torch.Tensor, cache: list[list[torch.Tensor]] | None
             ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Embed one new frame (B, C, h, w) given the previous call's cache (None at t=0).

        Gives exactly what `forward` gives for that frame on the whole video. The cache keeps
        each block's last k-1 spatial outputs as separate tensors: stacked with the new one they
        stay in the input's memory layout (channels-last when fused for inference), where
        slicing one stacked tensor would not, and the 1x1 convolution would copy it back.
        """
        x = self.inp(x)
        new_cache = []
        for i, (spatial, temporal) in enumerate(zip(self.spatial, self.temporal, strict=True)):
            y = spatial(x)
            past = cache[i] if cache is not None else [torch.zeros_like(y)] * (self.k - 1)
            window = [*past, y]
            new_cache.append(window[1:])
            x = self.act(temporal(torch.cat(window, dim=1)).add_(x))
        return self.out(x), new_cache


class Encoder(nn.Module):
    """(B, T, C, H, W) frames -> (B, T, D, H/8, W/8) embeddings; C = 1 (L in [0, 100]) or 3
    (Lab), as `cfg.input` says."""

    stride = STRIDE

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.head = TemporalHead(self.trunk.out_channels, cfg)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Per-frame trunk features: (N, 1 or 3, H, W) -> (N, C, H/8, W/8). L and ab are
        rescaled to about [-1, 1] in their own precision, then cast to the weights' (a bf16 copy
        of the model gets the same input as autocast gives a float32 one)."""
        weights = self.trunk.stem[0].weight.dtype
        x = image / 50.0
        x[:, :1] -= 1.0
        return self.trunk(x.to(weights))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Temporal head over trunk features: (B, T, C, h, w) -> (B, T, D, h, w)."""
        return self.head(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, t = image.shape[:2]
        feats = self.features(image.flatten(0, 1))
        return self.embed(feats.view(b, t, *feats.shape[1:]))


def fused_for_inference(encoder: Encoder) -> Encoder:
    """A copy with every BatchNorm folded into the convolution before it, in channels-last
    layout, and ReLUs through the sign bit (`SignReLU`): the same embeddings (to float
    rounding), 1.7x faster on CPU in eval mode. For inference only."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(encoder).eval()
    for module in fused.modules():
        if isinstance(module, BasicBlock):
            module.conv1, module.bn1 = fuse_conv_bn_eval(module.conv1, module.bn1), nn.Identity()
            module.conv2, module.bn2 = fuse_conv_bn_eval(module.conv2, module.bn2), nn.Identity()
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, SignReLU())
    fused.trunk.stem = nn.Sequential(fused.trunk.stem[0], PoolThenReLU())
    return fused.to(memory_format=torch.channels_last)


# Floats whose sign is their bits' sign as integers of the same width (IEEE sign-magnitude).
_SIGNED = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def _as_signed(x: torch.Tensor) -> torch.Tensor:
    """`x`'s bits as signed integers (a view), where its dtype has them; else `x`."""
    return x.view(_SIGNED[x.dtype]) if x.dtype in _SIGNED else x


class SignReLU(nn.Module):
    """ReLU in place through the sign bit: a float is negative exactly when its bits, read as a
    signed integer, are, so clamping those at 0 is max(x, 0) (NaNs aside), without the round
    trip through float32 that PyTorch's bf16 ReLU makes on CPUs (docs/performance.md). Integer
    views carry no gradient: for inference only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _as_signed(x).clamp_min_(0)
        return x


class PoolThenReLU(nn.Module):
    """The stem's ReLU and 3x3 max-pool (stride 2, padding 1) as four strided maxima, then the
    ReLU on a quarter of the values: the same values, without the indices of the maxima that
    PyTorch's bf16 max-pool computes on CPUs (docs/performance.md).

    On even sizes output j's window is cells 2j - 1, 2j, 2j + 1, i.e. the pair (2j, 2j + 1) and
    the cell before it; the first window's padding never holds the maximum, so it is left out.
    The maxima are taken over the bits as signed integers (`SignReLU`): they order positive
    floats as their values do and put every negative one below them, which is all that a ReLU
    after the maximum keeps.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            return F.max_pool2d(x, 3, 2, 1).relu_()
        bits = _as_signed(x)
        cols = torch.maximum(bits[..., 0::2], bits[..., 1::2])
        torch.maximum(cols[..., 1:], bits[..., 1:-2:2], out=cols[..., 1:])
        rows = torch.maximum(cols[..., 0::2, :], cols[..., 1::2, :])
        torch.maximum(rows[..., 1:, :], cols[..., 1:-2:2, :], out=rows[..., 1:, :])
        return rows.clamp_min_(0).view(x.dtype)


def within(h: int, w: int, radius: float, device: torch.device) -> torch.Tensor:
    """(h*w, h*w) scores to add so that a target cell copies only from reference cells closer
    than `radius` cells (0 where they are, FAR beyond), as tracking's windows do."""
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                          indexing="ij")
    cells = torch.stack([y.flatten(), x.flatten()], 1).float()
    return torch.where(torch.cdist(cells, cells) < radius, 0.0, FAR)


def colorization_loss(
    embeddings: torch.Tensor, colors: torch.Tensor, num_colors: int, temperature: float, *,
    normalize: bool = False, radius: float = 0.0, full_res: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predict the last frame's color classes by copying from the earlier frames' colors.

    embeddings: (B, T, D, h, w); colors: (B, T, h, w) class indices. With `normalize` the
    embeddings are unit vectors, with `radius` > 0 each target cell copies from reference cells
    within that many cells, and with `full_res` (B, H, W), the target's classes at the crop's
    resolution, the prediction is upsampled to it before the loss. Returns the cross-entropy,
    the color accuracy and the predicted class distribution (B, K, h, w) of the target frame.
    """
    b, t, d, h, w = embeddings.shape
    if normalize:
        embeddings = F.normalize(embeddings, dim=2)
    refs = embeddings[:, :-1].permute(0, 1, 3, 4, 2).reshape(b, (t - 1) * h * w, d)
    target = embeddings[:, -1].permute(0, 2, 3, 1).reshape(b, h * w, d)
    ref_colors = F.one_hot(colors[:, :-1].reshape(b, -1), num_colors).float()
    scores = dense_affinity(target, refs) / temperature
    if radius > 0:
        scores = scores + within(h, w, radius, scores.device).repeat(1, t - 1)
    probs = copy_soft(scores, ref_colors).transpose(1, 2)
    probs = probs.reshape(b, num_colors, h, w).contiguous()  # nll's backward needs it
    truth = colors[:, -1]
    if full_res is not None:  # a convex mix of distributions: still one
        probs, truth = F.interpolate(probs, size=full_res.shape[-2:], mode="bilinear"), full_res
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-8)), truth)
    accuracy = (probs.argmax(1) == truth).float().mean()
    return loss, accuracy, probs


def gflops_per_frame(encoder: Encoder, height: int = 480, width: int = 856) -> float:
    """GFLOPs (2 per multiply-add) to embed one frame when streaming: trunk + one head step."""
    from torch.utils.flop_counter import FlopCounterMode

    frame = torch.zeros(1, encoder.cfg.in_channels, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder.head.step(encoder.features(frame), None)
    return counter.get_total_flops() / 1e9
