"""Where and in what arithmetic the model runs: the device, the precision policy, and the
split of CPU threads between the encoder and the copy.

Tracking's precision setting chooses two dtypes: the encoder's (`encoder_dtype`: bf16 where the
hardware has it) and that of the window products, which only choose each location's top-k
(`choice_dtype`: int8 on CPUs, bf16 on GPUs); the chosen are always scored in float32.
docs/performance.md measures what each costs in J&F and time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from colortrack.data.video import prefetch
from colortrack.errors import UsageError

T = TypeVar("T")

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def torch_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device this machine can run, or a UsageError saying why not (before
    anything is loaded or written, rather than PyTorch's traceback at the first tensor)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {str(name)!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UsageError(f"device {str(name)!r}: {why} (torch {torch.__version__}); "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {str(name)!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"device {str(name)!r} is not supported; use cpu, cuda or cuda:N")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs); where
    they are emulated they are slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def native_int8() -> bool:
    """Whether this PyTorch multiplies int8 matrices on the CPU (torch._int_mm, 2.2 and later)."""
    try:
        torch._int_mm(torch.ones(1, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
    except (AttributeError, RuntimeError):
        return False
    return True


def encoder_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The encoder's arithmetic: bf16 where it is native (faster, and its embeddings are cast
    back to float32 before any copy), else float32."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision in ("auto", "int8") and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


# |mean unit embedding| of a first frame above which its embeddings are nearly parallel: int8
# keys, quantized in steps of each channel's spread, would then rank them too coarsely (an
# untrained encoder); trained models stay well below (docs/performance.md).
PARALLEL = 0.9


def choice_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The arithmetic of the window products, which only choose each location's top-k (the
    chosen are scored in float32): int8 on CPUs, which is faster and chooses nearly as well as
    bf16; bf16 on GPUs."""
    if precision == "int8" and device.type != "cpu":
        raise UsageError(f"precision=int8 computes on CPUs only; use auto or bf16 on {device}")
    if precision == "int8" and not native_int8():
        raise UsageError(f"precision=int8 needs torch._int_mm on the CPU (PyTorch 2.2 or "
                         f"later; this is {torch.__version__}); use auto, bf16 or fp32")
    if precision == "int8" or (precision == "auto" and device.type == "cpu" and native_int8()):
        return torch.int8
    return encoder_dtype(precision, device)


@contextlib.contextmanager
def one_frame_ahead(features: Iterable[T], device: torch.device, ahead: bool = True
                    ) -> Iterator[Iterator[T]]:
    """`features` computed in a background thread, ahead of the frame the caller copies; with
    `ahead` False, in the caller's thread with all its torch threads.

    The encoder of frame t + 1 then runs while the caller copies labels into frame t and writes
    them. On a CPU the torch threads are split between the two (the encoder's thread gets half),
    so that neither waits at a barrier for a thread the other holds, and the caller's count is
    restored after; with one torch thread, the features are computed in the caller's thread, as
    asked. GPUs run the encoder asynchronously, and their threads are left as they are.
    """
    total = torch.get_num_threads()
    split = device.type == "cpu"
    if not ahead or (split and total < 2):
        yield iter(features)
        return

    def on_own_threads() -> Iterator[T]:
        if split:  # sets this thread's count (and the default of threads started later)
            torch.set_num_threads((total + 1) // 2)
        yield from features

    if split:
        torch.set_num_threads(total // 2)
    computed = prefetch(on_own_threads(), depth=2)
    try:
        yield computed
    finally:
        computed.close()
        if split:
            torch.set_num_threads(total)
