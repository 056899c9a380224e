"""Build the Cython engine; all metadata lives in pyproject.toml.

Compiler directives live in one place: the header line of src/tradestats/engine.pyx.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "tradestats.engine",
        ["src/tradestats/engine.pyx"],
        extra_compile_args=["-O3"],
    )
]

setup(ext_modules=cythonize(extensions))
