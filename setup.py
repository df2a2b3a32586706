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
"""

import hashlib
import os
from pathlib import Path

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


class ParallelBuild(build_ext):
    """Builds the extensions on every core (``pip install`` cannot pass ``-j``)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


DIRECTIVES = {
    "language_level": 3,
    "binding": True,  # functions keep their signatures and docstrings (inspect, doctests)
    "annotation_typing": False,  # `x: float` stays any Python object, as in the .py
    "autotestdict": False,  # the doctests are found as in the .py (not twice)
}

setup(
    ext_modules=cythonize(
        [native, distinct, *map(learner, LEARNER)],
        quiet=True,
        compiler_directives=DIRECTIVES,
        nthreads=os.cpu_count() or 1,  # the C of each module written in parallel
    ),
    cmdclass={"build_ext": ParallelBuild},
)
