"""Build the Cython engine; all metadata lives in pyproject.toml.

Compiler directives live in the header line of each .pyx; exact.h sits beside them.

batchparse (an /add_batch/ body parsed without the GIL) links libsimdjson and is built only
where its header is found (Debian: apt-get install libsimdjson-dev), as PyYAML builds its
libyaml binding: without it the server parses with pysimdjson, holding the GIL, and gives the
same answers.
"""
import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup

ENGINE_MODULES = ("engine", "symbolfile", "filestore", "envelope")


def simdjson_include_dir():
    """The directory holding libsimdjson's simdjson.h, or None."""
    candidates = [os.environ.get("SIMDJSON_INCLUDE_DIR"), sysconfig.get_config_var("INCLUDEDIR"),
                  "/usr/include", "/usr/local/include"]
    for directory in filter(None, candidates):
        if os.path.exists(os.path.join(directory, "simdjson.h")):
            return directory
    return None


extensions = [
    Extension(
        f"tradestats.{name}",
        [f"src/tradestats/{name}.pyx"],
        include_dirs=["src/tradestats"],
        extra_compile_args=["-O3"],
    )
    for name in ENGINE_MODULES
]

simdjson_headers = simdjson_include_dir()
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
