"""Atomic file writes: a file is either complete or absent, never half-written.

Data goes to a temporary file in the target's directory, is flushed to disk, and is then moved into place with one
rename (or, when an existing file must not be replaced, a hard link, which fails if the name exists). The temporary
file is removed on any failure, including KeyboardInterrupt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; with ``overwrite=False`` an existing file raises FileExistsError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would surprise users
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: already exists") from None
            except OSError:  # no hard links on this file system: check, then rename
                if path.exists():
                    raise FileExistsError(f"{path}: already exists") from None
                os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path
