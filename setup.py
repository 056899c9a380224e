"""Build the Cython engine; all metadata lives in pyproject.toml.

Compiler directives live in the header line of each .pyx; exact.h sits beside them.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        f"tradestats.{name}",
        [f"src/tradestats/{name}.pyx"],
        include_dirs=["src/tradestats"],
        extra_compile_args=["-O3"],
    )
    for name in ("engine", "symbolfile", "filestore", "envelope")
]

setup(ext_modules=cythonize(extensions))
