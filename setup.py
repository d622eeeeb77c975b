"""Build of the C extensions l3ic_jax._fse (the FSE entropy coder) and l3ic_jax._cpu (AVX-512 convolution kernels).

All other metadata lives in pyproject.toml.  Environment switches:

- ``L3IC_FSE_WERROR=1`` (and ``CI=true``, as CI runs): compiler warnings are errors (both extensions).
- ``L3IC_FSE_DEBUG=1`` (both extensions): ``-O1 -g -fsanitize=address,undefined`` build.  Python
  itself is not instrumented, so run it with the ASan runtime preloaded, e.g.
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 pytest tests/test_fse.py``.
"""

import os

from setuptools import Extension, setup

# The C sources live outside the package folder: a folder named like an extension (l3ic_jax/_fse) would be
# imported as an empty namespace package from a source tree without a build.
_FSE_DIR = "csrc/fse"
_CPU_DIR = "csrc/cpu"

_cflags = ["-std=c99", "-Wall", "-Wextra"]
_ldflags = []
if os.environ.get("L3IC_FSE_DEBUG") == "1":
    _san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    _cflags += ["-O1", "-g", *_san]
    _ldflags += _san
else:
    _cflags += ["-O3"]
if os.environ.get("L3IC_FSE_WERROR") == "1" or os.environ.get("CI") == "true":  # CI: warnings are errors
    _cflags.append("-Werror")

def _extension(name: str, folder: str, stem: str, link=()) -> Extension:
    """One of our C modules: ``<stem>_binding.c`` (the Python API) over ``<stem>_core.c`` (plain C)."""
    return Extension(
        f"l3ic_jax.{name}",
        sources=[f"{folder}/{stem}_binding.c", f"{folder}/{stem}_core.c"],
        depends=[f"{folder}/{stem}_core.h"],
        include_dirs=[folder],
        extra_compile_args=_cflags,
        extra_link_args=_ldflags + list(link),
    )


setup(
    ext_modules=[
        _extension("_fse", _FSE_DIR, "fse"),
        # AVX-512 code is confined to functions with target attributes and chosen at run time, so the module
        # builds and imports on any CPU (elsewhere it reports `supported() == False`).
        _extension("_cpu", _CPU_DIR, "cpu", link=["-pthread"] if os.name == "posix" else []),
    ],
)
