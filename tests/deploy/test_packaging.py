"""The source distribution carries every source the build compiles: ``setup.py`` cythonizes
``features/_native.pyx`` (with its ``.pxi``), ``features/_distinct.pyx`` and the learner's ``.py`` files with
their ``.pxd``, so an sdist without them cannot be built (the ``.pyx`` were missing before MANIFEST.in)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPILED_SOURCES = (".pyx", ".pxi", ".pxd")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def test_the_sdist_carries_every_source_the_build_compiles(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    generated = [p.relative_to(ROOT).as_posix() for p in (ROOT / "features").glob("_*.c")]
    generated += [p.relative_to(ROOT).as_posix() for p in (ROOT / "build" / "cython-src").rglob("*")]
    # a checkout, with the C Cython wrote where bootstrap built (its mtime kept: setup.py's cythonize, which
    # runs for an sdist too, does not write it again)
    for name in tracked() + generated:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    (archive,) = (tmp_path / "dist").glob("rivulet-*.tar.gz")
    with tarfile.open(archive) as tar:
        inside = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

    needed = {name for name in tracked() if name.endswith(COMPILED_SOURCES)}
    needed |= {f"streaming/learning/{m}.py" for m in ("core", "state", "drifts", "evidence")}
    needed |= {"setup.py", "pyproject.toml"}
    assert {"features/_native.pyx", "features/_distinct.pyx", "streaming/learning/state.pxd"} <= needed
    assert needed - inside == set()
