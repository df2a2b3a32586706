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


def test_a_machine_without_a_c_compiler_installs_without_the_compiled_modules(tmp_path: Path) -> None:
    """Every extension is optional (setup.py): with no working C compiler the build goes on and the Python
    code runs. It failed the whole build before: ``cythonize`` returns new Extensions without ``optional``."""
    tree = tmp_path / "tree"
    generated = [p.relative_to(ROOT).as_posix() for p in (ROOT / "features").glob("_*.c")]
    generated += [p.relative_to(ROOT).as_posix() for p in (ROOT / "build" / "cython-src").rglob("*")]
    for name in tracked() + generated:  # the C already generated (mtime kept): the compiler is what fails
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CC": "false", "RIVULET_NO_EXT_CACHE": "1"}
    command = [sys.executable, "setup.py", "build_ext", "--inplace"]
    build = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    assert sorted(p.name for p in tree.rglob("*.so")) == []
    assert build.stderr.count('building extension "') >= 6  # each one said it was not built
    where = subprocess.run(
        [sys.executable, "-c", "import streaming.learning.core as c, features.distinct; print(c.__file__)"],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(tree / "streaming" / "learning" / "core.py")
