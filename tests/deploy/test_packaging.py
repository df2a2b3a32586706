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


def checkout(tree: Path) -> None:
    """A copy of the checkout with the C Cython already generated (its mtime kept: not written again)."""
    generated = [p.relative_to(ROOT).as_posix() for p in (ROOT / "features").glob("_*.c")]
    generated += [p.relative_to(ROOT).as_posix() for p in (ROOT / "build" / "cython-src").rglob("*")]
    for name in tracked() + generated:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)


def compiled_core(tree: Path, env: dict[str, str]) -> str:
    """The file ``streaming.learning.core`` imports from in ``tree`` (its ``.py`` or a compiled module)."""
    where = subprocess.run(
        [sys.executable, "-c", "import streaming.learning.core as c, features.distinct; print(c.__file__)"],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return where.stdout.strip()


def test_the_sdist_carries_every_source_the_build_compiles(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    checkout(tree)  # setup.py's cythonize runs for an sdist too: the C is there, not written again
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
    checkout(tree)  # the C already generated: the compiler is what fails
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CC": "false", "RIVULET_NO_EXT_CACHE": "1"}
    command = [sys.executable, "setup.py", "build_ext", "--inplace"]
    build = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    assert sorted(p.name for p in tree.rglob("*.so")) == []
    assert build.stderr.count('building extension "') >= 6  # each one said it was not built
    assert compiled_core(tree, env) == str(tree / "streaming" / "learning" / "core.py")


def test_the_extension_cache_serves_the_same_inputs_and_never_changed_ones(tmp_path: Path) -> None:
    """``build/ext-cache/<key>`` (setup.py): a build whose inputs and toolchain match a cached key copies the
    modules (here with no C compiler at all: ``CC=false``), and a build after any input changed is a new
    key, so it compiles (and, without a compiler, goes on without the modules) instead of taking the old."""
    tree = tmp_path / "tree"
    checkout(tree)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CC": "false"}
    key_of = "import runpy, setuptools; setuptools.setup = lambda **kw: None; "
    key_of += "print(runpy.run_path('setup.py')['KEY'])"

    def key() -> str:
        out = subprocess.run(
            [sys.executable, "-c", key_of], cwd=tree, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    built = sorted(
        p.relative_to(ROOT) for p in [*ROOT.glob("features/*.so"), *ROOT.glob("streaming/learning/*.so")]
    )
    assert len(built) == 6, built  # scripts/bootstrap compiled all six here
    first = key()
    for module in built:  # the modules this checkout's sources were compiled into, stored under its key
        (tree / "build" / "ext-cache" / first / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / module, tree / "build" / "ext-cache" / first / module)
    command = [sys.executable, "setup.py", "build_ext", "--inplace"]

    hit = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    assert hit.returncode == 0, hit.stderr[-2000:]
    assert hit.stdout.count(f"from build/ext-cache/{first[:12]}") == 6
    for module in built:
        assert (tree / module).read_bytes() == (ROOT / module).read_bytes()
    assert compiled_core(tree, env) == str(tree / built[2])  # the compiled core, its digest accepted

    for module in built:
        (tree / module).unlink()
    with (tree / "features" / "_distinct.pyx").open("a") as pyx:
        pyx.write("\n# an edit\n")
    assert key() != first
    miss = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    assert miss.returncode == 0, miss.stderr[-2000:]
    assert "from build/ext-cache" not in miss.stdout
    assert 'building extension "features._distinct" failed' in miss.stderr
    # the edited module is not there (neither the cached one nor the one the first build left in setuptools'
    # build directory, which --inplace copied into the tree before); the others are setuptools' up-to-date
    # builds of unchanged sources
    assert sorted(p.relative_to(tree) for p in tree.rglob("*.so") if p.parts[len(tree.parts)] != "build") == [
        m for m in built if m.name.split(".")[0] != "_distinct"
    ]
