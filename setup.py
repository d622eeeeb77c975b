"""Build of the C extensions l3ic_jax._fse (the FSE entropy coder) and l3ic_jax._cpu (AVX-512 convolution kernels).

All other metadata lives in pyproject.toml.  Environment switches:

- ``L3IC_FSE_WERROR=1`` (and ``CI=true``, as CI runs): compiler warnings are errors (both extensions).
- ``L3IC_FSE_DEBUG=1`` (both extensions): ``-O1 -g -fsanitize=address,undefined`` build.  Python
  itself is not instrumented, so run it with the ASan runtime preloaded, e.g.
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 pytest tests/test_fse.py``.
"""

import os

from setuptools import Extension, setup

_FSE_DIR = "l3ic_jax/_fse"
_CPU_DIR = "l3ic_jax/_cpu"

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

setup(
    ext_modules=[
        Extension(
            "l3ic_jax._fse",
            sources=[f"{_FSE_DIR}/fse_binding.c", f"{_FSE_DIR}/fse_core.c"],
            depends=[f"{_FSE_DIR}/fse_core.h"],
            include_dirs=[_FSE_DIR],
            extra_compile_args=_cflags,
            extra_link_args=_ldflags,
        ),
        # AVX-512 code is confined to functions with target attributes and chosen at run time, so the module
        # builds and imports on any CPU (elsewhere it reports `supported() == False`).
        Extension(
            "l3ic_jax._cpu",
            sources=[f"{_CPU_DIR}/cpu_binding.c", f"{_CPU_DIR}/cpu_core.c"],
            depends=[f"{_CPU_DIR}/cpu_core.h"],
            include_dirs=[_CPU_DIR],
            extra_compile_args=_cflags,
            extra_link_args=_ldflags + (["-pthread"] if os.name == "posix" else []),
        ),
    ],
)
