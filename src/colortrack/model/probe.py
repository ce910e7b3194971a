"""A timed probe of int8 products, for CPUs whose capabilities do not tell how fast they are.

`torch._int_mm` runs on oneDNN with VNNI or AMX, and as a plain loop on x86 CPUs without them;
elsewhere (ARM, other CPUs) only a measurement says whether it beats float32 products of the
same integers. `faster_int8` times both once, on the shapes of tracking's windows, and keeps the
answer in the user's cache folder per CPU and version, as FFTW keeps its wisdom: later runs read
it instead. A damaged or stale cache is measured again and rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from colortrack import __version__
from colortrack.data.files import atomic_write_bytes
from colortrack.errors import ColortrackError

ARITHMETICS = ("int_mm", "float")  # int8 products on torch._int_mm, or as float32 GEMMs


def cache_path() -> Path:
    """$COLORTRACK_CACHE, else $XDG_CACHE_HOME/colortrack, else ~/.cache/colortrack; the file
    in it that holds the probe's answer."""
    folder = os.environ.get("COLORTRACK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colortrack"
    return Path(folder) / "arithmetic.json"


def time_products(repeats: int = 5) -> dict[str, float]:
    """Seconds, best of `repeats`, for one tile of tracking's window products (40 queries by
    6,656 keys of 64 channels) on `torch._int_mm` and as a float32 matmul."""
    queries = torch.randint(-127, 128, (40, 64), dtype=torch.int8)
    keys = torch.randint(-127, 128, (64, 6656), dtype=torch.int8)
    runs = {"int_mm": lambda: torch._int_mm(queries, keys),
            "float": lambda: queries.float() @ keys.float()}
    best = {}
    for name, run in runs.items():
        run()  # first calls pick kernels and allocate
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    return best


def faster_int8(key: dict[str, str], measure: Callable[[], dict[str, float]] = time_products,
                path: Path | None = None) -> tuple[str, dict[str, float], bool]:
    """The faster arithmetic for int8 products on the machine that `key` describes, its
    timings, and whether they came from the cache. Measured, then cached, where the cache has
    no valid entry for `key`; a cache that cannot be written only costs the next run a probe."""
    path = path or cache_path()
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, LookupError):
        cached = json.loads(path.read_text())
        seconds = cached["seconds"]
        if cached["key"] == key and set(seconds) == set(ARITHMETICS) and all(
                isinstance(s, float) and s > 0 for s in seconds.values()):
            return min(seconds, key=seconds.get), seconds, True
    seconds = measure()
    entry = {"key": key, "seconds": seconds, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with contextlib.suppress(OSError, ColortrackError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(entry, indent=1).encode())
    return min(seconds, key=seconds.get), seconds, False


def machine_key(cpu_model: str, vector: str) -> dict[str, str]:
    """What the probe's answer depends on: the CPU, and the code that runs on it."""
    return {"cpu": cpu_model, "vector": vector, "torch": torch.__version__,
            "colortrack": __version__}
