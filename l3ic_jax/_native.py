"""Import of the package's optional C extensions (``_cpu``, ``_fse``), in one place.

In a source tree without a build (what a bare GPU machine trains from) ``l3ic_jax/_cpu`` and ``l3ic_jax/_fse``
are folders of C sources, which Python imports as empty namespace packages instead of failing. Such a module is
no extension, and is reported as missing like an import error.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_extension(name: str, required: bool = False) -> ModuleType | None:
    """The built extension ``l3ic_jax.<name>``; where it is not built, None, or ImportError when ``required``
    (the loader's own error, e.g. a missing symbol, is kept)."""
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        if required:
            raise
        return None
    if getattr(module, "__file__", None) is None:
        if required:
            raise ImportError(f"{module.__name__} is not built (a source tree without `pip install -e .`)")
        return None
    return module
