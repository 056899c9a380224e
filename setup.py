"""Build the Cython engine; all metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

# Directives for every kernel are set once here and at the top of engine.pyx.
COMPILER_DIRECTIVES = {"language_level": "3", "embedsignature": True}

extensions = [
    Extension(
        "tradestats.engine",
        ["src/tradestats/engine.pyx"],
        extra_compile_args=["-O3"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES))
