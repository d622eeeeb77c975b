"""The source distribution can build the package: it carries every C source and header of the extensions.

Why: pip builds from an sdist wherever no wheel fits the machine. Until session 16 the sdist lacked the CPU kernels'
header (``cpu_core.h``), so a build from it failed with "No such file or directory"; an install from the git tree
did not show it, since that builds from the tree itself.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile

from conftest import REPO_ROOT


def test_sdist_carries_every_c_source(tmp_path):
    csrc = REPO_ROOT / "csrc"
    wanted = sorted(p.relative_to(REPO_ROOT).as_posix() for p in csrc.rglob("*") if p.suffix in (".c", ".h"))
    assert any(w.endswith("_core.h") for w in wanted), f"no C headers found under {csrc}"
    # egg-info goes to the temporary folder too, so the checkout is left as it was.
    res = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "sdist", "-d", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [w for w in wanted if w not in names]
    assert not missing, f"the sdist lacks {missing}"
    for script in ("tools/fse_sanitize.sh", "tools/cpu_sanitize.sh", "tools/cpu_sanitize_driver.py"):
        assert script in names, f"the sdist lacks {script}"
