"""The compiled parts of Rivulet (Cython). Everything else is in pyproject.toml.

- ``features._native`` and ``features._distinct``: the in-order path of the feature engine and the exact-set
  path of the distinct count (``.pyx``).
- The learner's hot path: ``streaming.learning.core``, ``state``, ``drifts`` and ``evidence``, compiled from
  their own ``.py`` files, unchanged (pure Python mode, annotations not taken as C types: the compiled
  module behaves as the Python one), with the C types of the per-model state declared in ``.pxd`` files
  beside them (``state.pxd``: the core reads a model's fields as C struct members). There is one source: the
  ``.py``. Each compiled module carries the SHA-256 of the source it was built from, and
  ``streaming.learning`` refuses to import a compiled module whose ``.py`` changed since (rebuild:
  ``scripts/bootstrap`` or ``.venv/bin/python setup.py build_ext --inplace``), so an edit is never silently
  shadowed by an older build.

Every extension is optional: where it cannot be built (no C compiler, no Python headers), the install goes on
without it and the same code runs as Python (the feature engine's generated path, features.fused; the
learner's ``.py`` modules), with the same results; ``rivulet features check`` and the engine say which path
runs.

Built modules are kept in ``build/ext-cache/<key>/`` (ignored by git), the key a SHA-256 of every Cython input
(the ``.pyx``, ``.pxi`` and ``.pxd`` files, the learner's ``.py``, this file) and of the toolchain (Python,
its extension suffix and compiler settings, Cython's version, ``CC``/``CFLAGS``). A build whose key is there
copies those modules instead of generating C and compiling it again: ``scripts/bootstrap``'s editable install
fills it, and a ``pip install .`` of the same checkout then installs the same modules without rebuilding them
(the fresh-virtualenv demo test: about 70 s of compiling saved). Any change of an input is a new key, so a
cached module is never one built from other sources; ``RIVULET_NO_EXT_CACHE=1`` builds from scratch.
"""

import hashlib
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import Cython
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# the learner's modules compiled from their .py (streaming/learning/__init__.py checks their digests)
LEARNER = ("core", "state", "drifts", "evidence")

native = Extension(
    "features._native",
    ["features/_native.pyx"],
    # included by the .pyx: a change rebuilds it
    depends=["features/_native_exact.pxi", "features/_native_mirror.pxi"],
    # no fused multiply-add: every floating-point operation is the one Python performs (the exact sums and
    # the square split depend on it), so the compiled path's states are the same bytes as the Python one's
    extra_compile_args=["-O2", "-ffp-contract=off"],
    optional=True,
)

# the exact-set path of the distinct count (features.distinct uses it where it is built)
distinct = Extension(
    "features._distinct",
    ["features/_distinct.pyx"],
    extra_compile_args=["-O2", "-ffp-contract=off"],
    optional=True,
)


def learner(name: str) -> Extension:
    """``streaming.learning.<name>`` compiled from a copy of its ``.py`` that ends with the digest of its
    sources (``_COMPILED_FROM``: the ``.py`` and, where there is one, the ``.pxd`` declaring its C types,
    copied beside it): the line numbers of tracebacks stay those of the ``.py``."""
    folder = ROOT / "streaming" / "learning"
    text = (folder / f"{name}.py").read_bytes()
    pxd = folder / f"{name}.pxd"
    declared = pxd.read_bytes() if pxd.is_file() else b""
    copy = ROOT / "build" / "cython-src" / "streaming" / "learning" / f"{name}.py"
    copy.parent.mkdir(parents=True, exist_ok=True)
    body = text + f"\n_COMPILED_FROM = {hashlib.sha256(text + declared).hexdigest()!r}\n".encode()
    for path, content in ((copy, body), (copy.with_suffix(".pxd"), declared)):
        if not content:
            path.unlink(missing_ok=True)
        elif not path.exists() or path.read_bytes() != content:  # unchanged: not rebuilt
            path.write_bytes(content)
    return Extension(
        f"streaming.learning.{name}",
        [str(copy.relative_to(ROOT))],
        extra_compile_args=["-O2", "-ffp-contract=off"],
        optional=True,
    )


CACHE = ROOT / "build" / "ext-cache"
KEEP = 4  # cache entries kept (the newest): older keys are removed when a new one is stored


def cache_key() -> str:
    """The SHA-256 of everything a built module depends on: a change of any input is a new key."""
    inputs = [ROOT / "setup.py", *(ROOT / "streaming" / "learning" / f"{name}.py" for name in LEARNER)]
    for pattern in ("*.pyx", "*.pxi", "*.pxd"):
        inputs += [*ROOT.glob(f"features/{pattern}"), *ROOT.glob(f"streaming/learning/{pattern}")]
    digest = hashlib.sha256()
    for path in sorted(set(inputs)):
        digest.update(f"{path.relative_to(ROOT).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    toolchain = [sys.version, sys.base_prefix, Cython.__version__]
    toolchain += [str(sysconfig.get_config_var(v)) for v in ("EXT_SUFFIX", "CC", "CFLAGS", "LDSHARED")]
    toolchain += [os.environ.get(v, "") for v in ("CC", "CFLAGS", "LDFLAGS", "LDSHARED")]
    digest.update("\0".join(toolchain).encode())
    return digest.hexdigest()


class ParallelBuild(build_ext):
    """Builds the extensions on every core (``pip install`` cannot pass ``-j``), or copies the modules of an
    identical build from ``build/ext-cache`` (see the module's docstring)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extension(self, ext: Extension) -> None:
        relative = self.get_ext_filename(ext.name)
        cached, target = CACHE / KEY / relative, Path(self.get_ext_fullpath(ext.name))
        if USE_CACHE and cached.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached, target)
            print(f"setup.py: {ext.name} from build/ext-cache/{KEY[:12]} (same sources and toolchain)")
            return
        try:
            super().build_extension(ext)
        except Exception:
            # an optional module that failed to build: setuptools would still copy the module an earlier build
            # left in its build directory into the tree (--inplace), built from other sources
            target.unlink(missing_ok=True)
            raise
        if USE_CACHE and target.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}")
            shutil.copy2(target, partial)
            os.replace(partial, cached)  # whole or not at all: a concurrent build reads one or the other
            entries = sorted(CACHE.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in entries[KEEP:]:
                shutil.rmtree(old, ignore_errors=True)


def cached_everything(extensions: list[Extension]) -> bool:
    """Whether every extension's module is in the cache (then no C is generated: cythonize is skipped)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return USE_CACHE and all(
        (CACHE / KEY / (ext.name.replace(".", os.sep) + suffix)).is_file() for ext in extensions
    )


DIRECTIVES = {
    "language_level": 3,
    "binding": True,  # functions keep their signatures and docstrings (inspect, doctests)
    "annotation_typing": False,  # `x: float` stays any Python object, as in the .py
    "autotestdict": False,  # the doctests are found as in the .py (not twice)
}

EXTENSIONS = [native, distinct, *map(learner, LEARNER)]
KEY = cache_key()
USE_CACHE = os.environ.get("RIVULET_NO_EXT_CACHE") != "1"


def generated(extensions: list[Extension]) -> list[Extension]:
    """The extensions with their C generated by Cython, each still ``optional``: ``cythonize`` returns new
    Extension objects without it, so a module that failed to compile (no C compiler) failed the whole install
    instead of leaving its Python code to run."""
    built = cythonize(
        extensions,
        quiet=True,
        compiler_directives=DIRECTIVES,
        nthreads=os.cpu_count() or 1,  # the C of each module written in parallel
    )
    optional = {ext.name: ext.optional for ext in extensions}
    for ext in built:
        ext.optional = optional[ext.name]
    return built


setup(
    ext_modules=EXTENSIONS if cached_everything(EXTENSIONS) else generated(EXTENSIONS),
    cmdclass={"build_ext": ParallelBuild},
)
