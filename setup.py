"""Build the Cython engine; all metadata lives in pyproject.toml.

Compiler directives live in the header line of each .pyx; exact.h sits beside them.

batchparse (an /add_batch/ body parsed without the GIL) links libsimdjson and is built only
where its header is found (Debian: apt-get install libsimdjson-dev), as PyYAML builds its
libyaml binding: without it the server parses with pysimdjson, holding the GIL, and gives the
same answers.

The engine's CRC32C checksums (checksum.h) use Intel's ISA-L where its header is found (Debian:
apt-get install libisal-dev), several times the speed of the crc32 instruction one word at a
time, which is what runs without it.
"""
import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup

ENGINE_MODULES = ("engine", "symbolfile", "filestore", "envelope")


def include_dir_holding(header, variable):
    """The directory holding a library's header (the environment variable's first), or None."""
    candidates = [os.environ.get(variable), sysconfig.get_config_var("INCLUDEDIR"),
                  "/usr/include", "/usr/local/include"]
    for directory in filter(None, candidates):
        if os.path.exists(os.path.join(directory, header)):
            return directory
    return None


isal_headers = include_dir_holding(os.path.join("isa-l", "crc.h"), "ISAL_INCLUDE_DIR")
extensions = [
    Extension(
        f"tradestats.{name}",
        [f"src/tradestats/{name}.pyx"],
        include_dirs=["src/tradestats"] + ([isal_headers] if isal_headers else []),
        define_macros=[("TS_HAVE_ISAL", "1")] if isal_headers else [],
        libraries=["isal"] if isal_headers else [],
        extra_compile_args=["-O3"],
    )
    for name in ENGINE_MODULES
]

simdjson_headers = include_dir_holding("simdjson.h", "SIMDJSON_INCLUDE_DIR")
if simdjson_headers is not None:
    extensions.append(Extension(
        "tradestats.batchparse",
        ["src/tradestats/batchparse.pyx"],
        include_dirs=["src/tradestats", simdjson_headers],
        extra_compile_args=["-O3", "-std=c++17"],
        libraries=["simdjson"],
        language="c++",
    ))

modules = cythonize(extensions)
for module in modules:
    if module.name == "tradestats.batchparse":
        # A failed build of it (no C++ compiler, say) leaves pysimdjson's path, not no build.
        # Set here: cythonize() does not carry an Extension's optional over.
        module.optional = True

setup(ext_modules=modules)
