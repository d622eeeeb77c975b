"""Import of the package's optional C extensions (``_cpu``, ``_fse``), in one place.

In a source tree without a build (what a bare GPU machine trains from) the import fails and the extension counts
as missing. A leftover folder of the extension's name (the C sources lived in ``l3ic_jax/_cpu`` and ``_fse`` before
they moved to ``csrc/``; git keeps a folder that holds untracked files) would instead import as an empty namespace
package: such a module is no extension, and is reported as missing too.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_extension(name: str, required: bool = False) -> ModuleType | None:
    """The built extension ``l3ic_jax.<name>``; where it is not built, None, or ImportError when ``required``
    (the loader's own error, e.g. a missing symbol, is kept)."""
    full_name = f"{__package__}.{name}"
    not_built = f"{full_name} is not built (a source tree without `pip install -e .`)"
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as e:
        if not required:
            return None
        if e.name != full_name:  # something the extension itself imports is missing
            raise
        raise ImportError(not_built) from e
    except ImportError:
        if required:
            raise
        return None
    if getattr(module, "__file__", None) is None:
        if required:
            raise ImportError(not_built)
        return None
    return module
