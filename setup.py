"""Builds the optional native copy kernel (src/colortrack/_window.c); everything else is in
pyproject.toml. `optional=True`: where no C compiler is found the install still succeeds and
tracking runs the same protocol in PyTorch (colortrack.propagation.native says which)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("colortrack._window", ["src/colortrack/_window.c"],
                             extra_compile_args=["-O3"], optional=True)])
