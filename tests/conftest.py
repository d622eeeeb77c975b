"""Shared test helpers: where the shared reference files live, skipping cleanly, TensorFlow on the CPU, and a
place to record figures (worst differences, timings) that are printed at the end of the run.

- ``SHARED_DIR`` is ``<repo>/../shared`` (override with ``L3IC_SHARED_DIR``); the ``shared`` fixture returns a
  function ``shared("reference", "x.pb")`` that gives the path or skips the test with the reason.
- ``tf`` fixture: TensorFlow pinned to the CPU, or the test is skipped when the ``tf`` extra is not installed.
- ``record`` fixture: ``record("parity 16c 512x512", latent=1e-5, ...)``; printed in the terminal summary.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
SHARED_DIR = Path(os.environ.get("L3IC_SHARED_DIR", REPO_ROOT.parent / "shared"))

# `python -m pytest` puts the working directory on sys.path, plain `pytest` does not. Appending (never
# inserting) keeps an installed l3ic_jax first, and still finds `convert/` (not installed) and the helpers here.
for _p in (REPO_ROOT, TESTS_DIR):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))


def shared_path(*parts: str) -> Path:
    """A path under the shared folder, or skip the calling test with the reason."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared folder is expected at <repo>/../shared or $L3IC_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def load_tool():
    """Import a script of tools/ by name (tools/ is not a package); each call gives a fresh module."""
    import importlib.util

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return _load


@pytest.fixture(scope="session")
def shared():
    return shared_path


@pytest.fixture(scope="session")
def tf():
    """TensorFlow on the CPU only; skips when it is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow", reason="needs TensorFlow (the `tf` extra)")
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialized; the tests also place ops on /CPU:0
        pass
    return tf


_RECORDS: list[tuple[str, dict]] = []


@pytest.fixture(scope="session")
def record():
    """``record(name, **values)``: keep figures to print in the terminal summary."""

    def _record(name: str, **values) -> None:
        _RECORDS.append((name, values))

    return _record


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def pytest_terminal_summary(terminalreporter):
    if _RECORDS:
        terminalreporter.section("recorded figures")
        for name, values in _RECORDS:
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
