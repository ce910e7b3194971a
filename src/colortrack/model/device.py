"""Where and in what arithmetic the model runs: the device, the precision policy, and the
split of CPU threads between the encoder and the copy.

Tracking's precision setting chooses two dtypes: the encoder's (`encoder_dtype`: bf16 where the
hardware computes it natively) and that of the window products, which only choose each
location's top-k (`choice_dtype`: int8 on CPUs, bf16 on GPUs); the chosen are always scored in
float32. How int8 products are multiplied is chosen by what is fast on this CPU, not by what
exists (`int8_products`): the same integer sums either way. docs/performance.md measures what
each costs in J&F and time, per CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from colortrack.copy import native
from colortrack.data.video import prefetch
from colortrack.errors import UsageError
from colortrack.model import probe

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


@dataclasses.dataclass(frozen=True)
class Cpu:
    """What this CPU offers the model's arithmetic, as PyTorch detects it."""

    model: str
    vector: str  # PyTorch's kernel level: AVX512, AVX2, DEFAULT (ARM: SVE256, DEFAULT), ...
    vnni: bool  # AVX512-VNNI, which torch._int_mm needs for oneDNN (AVX-VNNI does not count)
    amx: bool  # Intel AMX tiles: int8 and bf16 matrix products
    bf16: bool  # bf16 arithmetic in hardware (AVX512-BF16 or AMX)

    @property
    def x86(self) -> bool:
        return self.vector.startswith("AVX")

    def __str__(self) -> str:
        sets = [self.vector] + [n for n, has in (("VNNI", self.vnni), ("AMX", self.amx),
                                                 ("BF16", self.bf16)) if has]
        return f"{self.model} ({', '.join(sets)})"


def _cpu_model() -> str:
    """The CPU's marketing name (Linux's /proc/cpuinfo), else what Python's platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def this_cpu() -> Cpu:
    """This machine's CPU (PyTorch's private checks, each missing from some versions)."""
    def check(name: str) -> bool:
        with contextlib.suppress(AttributeError, RuntimeError):
            return bool(getattr(torch.cpu, name)())
        return False

    amx = check("_is_amx_tile_supported")
    return Cpu(model=_cpu_model(), vector=torch.backends.cpu.get_cpu_capability(),
               vnni=check("_is_vnni_supported"), amx=amx,
               bf16=amx or check("_is_avx512_bf16_supported"))


def native_bf16(device: torch.device, cpu: Cpu | None = None) -> bool:
    """Whether bfloat16 convolutions run natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs); where
    they are emulated (oneDNN does so on any AVX-512 CPU) they are slower than float32: 25x
    for a 3x3 convolution on an AVX2 CPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (device.type == "cpu" and (cpu or this_cpu()).bf16
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
    chosen are scored in float32): int8 on CPUs, which chooses nearly as well as bf16 and is
    the fastest on every CPU measured (`int8_products` says how it is multiplied); bf16 on
    GPUs."""
    if precision == "int8" and device.type != "cpu":
        raise UsageError(f"precision=int8 computes on CPUs only; use auto or bf16 on {device}")
    if precision == "int8" or (precision == "auto" and device.type == "cpu"):
        return torch.int8
    return encoder_dtype(precision, device)


@dataclasses.dataclass(frozen=True)
class Int8Products:
    """How int8 window products are multiplied on this CPU, and why."""

    arithmetic: str  # "int_mm": torch._int_mm; "float": float32 GEMMs of the same integers
    why: str

    @property
    def in_float(self) -> bool:
        return self.arithmetic == "float"


def int8_products(cpu: Cpu | None = None, *, has_int_mm: bool | None = None,
                  probe_cpu: Callable[[dict[str, str]], tuple] = probe.faster_int8
                  ) -> Int8Products:
    """The faster way to multiply int8 products here, chosen by capability where that tells and
    by a timed probe, cached per machine, where it does not. Both give the same int32 sums."""
    cpu = cpu or this_cpu()
    if not (native_int8() if has_int_mm is None else has_int_mm):
        return Int8Products("float", f"this PyTorch ({torch.__version__}) has no torch._int_mm")
    if cpu.vnni or cpu.amx:
        return Int8Products("int_mm", "VNNI/AMX multiply int8 in hardware (oneDNN)")
    if cpu.x86:
        return Int8Products("float", f"{cpu.vector} without AVX512-VNNI: torch._int_mm "
                                     "falls back to a plain loop, 33x slower than float32")
    arithmetic, seconds, cached = probe_cpu(probe.machine_key(cpu.model, cpu.vector))
    timings = ", ".join(f"{name} {s * 1e3:.2f} ms" for name, s in seconds.items())
    kept = "cached in" if cached else "saved to"
    return Int8Products(arithmetic, f"timed on this CPU ({timings}; {kept} {probe.cache_path()})")


def arithmetic_report(precision: str = "auto", device: torch.device | None = None) -> str:
    """What `colortrack info` prints: the CPU, and the arithmetic each tracking stage uses
    with `precision`, and why."""
    device, cpu = device or torch.device("cpu"), this_cpu()
    lines = [f"cpu: {cpu}", f"torch: {torch.__version__}, {torch.get_num_threads()} threads"]
    encoder = encoder_dtype(precision, device)
    why = ("native on this device" if encoder == torch.bfloat16 and native_bf16(device)
           else "as asked" if precision in ("fp32", "bf16")
           else "bf16 would be emulated here, slower than float32")
    lines.append(f"encoder: {str(encoder).removeprefix('torch.')} ({why})")
    choice = choice_dtype(precision, device)
    if choice == torch.int8:
        products = int8_products(cpu)
        how = "torch._int_mm" if not products.in_float else "float32 FMAs of the int8 values"
        lines.append(f"window products: int8, on {how} ({products.why})")
    else:
        lines.append(f"window products: {str(choice).removeprefix('torch.')}")
    level = {2: "AVX-512", 1: "AVX2", 0: "portable C"}.get(native.LEVEL, "?")
    kernel = (f"PyTorch on {device}" if device.type != "cpu"
              else f"native kernel at {level}" if native.kernel is not None
              else "PyTorch (the native kernel is not built)")
    lines.append(f"top-k and copy: {kernel}")
    return "\n".join(lines)


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
