"""Builds the optional native copy kernel (src/colortrack/copy/_window.c); everything else is in
pyproject.toml. `optional=True`: where no C compiler is found the install still succeeds and
tracking runs the same protocol in PyTorch (colortrack.copy.native.kernel is then None)."""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# On Linux, PyTorch's CPU wheels run their threads on GNU OpenMP (libgomp.so.1): built with
# -fopenmp, the kernel shares that runtime and runs on PyTorch's own threads. A separate pool
# would fight them for the cores, so elsewhere it runs on one thread (docs/performance.md).
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []


class BuildWithOrWithoutOpenMP(build_ext):
    """Retries without OpenMP where the compiler cannot build or link it."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            if not OPENMP:
                raise
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a not in OPENMP]
            ext.extra_link_args = [a for a in ext.extra_link_args if a not in OPENMP]
            super().build_extension(ext)


setup(
    ext_modules=[Extension("colortrack.copy._window", ["src/colortrack/copy/_window.c"],
                           extra_compile_args=["-O3", *OPENMP], extra_link_args=OPENMP,
                           optional=True)],
    cmdclass={"build_ext": BuildWithOrWithoutOpenMP},
)
