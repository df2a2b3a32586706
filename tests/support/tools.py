"""System tools the tests run (Debian's packages, installed by ``scripts/install-deps --test``)."""

from __future__ import annotations

import shutil

import pytest

__all__ = ["required_tool"]


def required_tool(name: str, package: str) -> str:
    """The path of ``name``; a test that needs it fails when it is missing, never skips (on CI or off it:
    a skipped test passes nothing)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (Debian's {package} package: scripts/install-deps --test)")
    return found
