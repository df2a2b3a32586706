"""The compiled part of Rivulet: ``features._native`` (Cython), the in-order path of the feature engine.

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C compiler,
no Python headers), the install goes on without it and the engine runs its generated Python path
(features.fused), with the same results; ``rivulet features check`` and the engine say which path runs.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

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

# every core: the extensions are translated and compiled side by side, in a PEP 517 build (pip install .)
# too, where no -j can be passed (an explicit ``build_ext -j N`` still wins)
jobs = os.cpu_count() or 1
setup(
    ext_modules=cythonize([native, distinct], quiet=True, nthreads=jobs),
    options={"build_ext": {"parallel": jobs}},
)
