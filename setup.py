"""Build of the C extension l3ic_jax._fse (the FSE entropy coder).

All other metadata lives in pyproject.toml.  Environment switches:

- ``L3IC_FSE_WERROR=1`` (and ``CI=true``, as CI runs): compiler warnings are errors.
- ``L3IC_FSE_DEBUG=1``: ``-O1 -g -fsanitize=address,undefined`` build.  Python
  itself is not instrumented, so run it with the ASan runtime preloaded, e.g.
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 pytest tests/test_fse.py``.
"""

import os

from setuptools import Extension, setup

_FSE_DIR = "l3ic_jax/_fse"

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
        )
    ],
)
