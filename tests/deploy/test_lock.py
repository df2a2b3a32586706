"""The image installs the tested dependencies: ``requirements-runtime.lock`` is ``requirements.lock`` without
the extras (every pin and hash the same), it pins every runtime dependency of ``pyproject.toml`` inside its
range and nothing of the extras, and the Dockerfile installs it with hashes checked before Rivulet's wheel
without resolving anything. (Before, the image ran ``pip install`` on the wheel: whatever PyPI held that
day.) ``scripts/lock --check`` in ``.ci/run`` checks both files against ``pyproject.toml`` by compiling them
again."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PLATFORM = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11"}


def pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """``name -> (version, hashes)`` of a uv-compiled requirements file."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        head = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", block)
        if head:
            out[canonicalize_name(head[1])] = (head[2], frozenset(re.findall(r"--hash=(\S+)", block)))
    return out


def test_the_runtime_lock_is_the_full_lock_without_the_extras() -> None:
    full, runtime = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-runtime.lock")
    assert runtime and all(hashes for _, hashes in runtime.values())
    assert {name: full.get(name) for name in runtime} == runtime  # same versions, same hashes
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(IMAGE_PLATFORM):
            name = canonicalize_name(req.name)
            assert name in runtime, spec
            assert req.specifier.contains(runtime[name][0], prereleases=True), (spec, runtime[name][0])
    extras_only = {
        canonicalize_name(Requirement(spec).name)
        for specs in project["optional-dependencies"].values()
        for spec in specs
    } - {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    assert extras_only and not extras_only & set(runtime), extras_only & set(runtime)


def test_the_image_installs_the_runtime_lock_with_hashes_then_the_wheel_alone() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text.split("\nFROM ")[-1]
    assert "COPY requirements-runtime.lock" in final_stage
    locked = re.search(r"pip install [^\n]*--require-hashes -r \S*requirements-runtime\.lock", final_stage)
    wheel = re.search(r"pip install [^\n]*--no-deps /wheels/\*\.whl", final_stage)
    assert locked and wheel and locked.start() < wheel.start()
    assert "requirements-runtime.lock" not in (ROOT / ".dockerignore").read_text()
