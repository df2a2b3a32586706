"""scripts/install-deps decides what a machine lacks and installs it (as root, with apt-get) or says how.

The script runs with a PATH holding only stubs: each tool it probes is there or not, answers as a given
version, and ``apt-get`` and ``id`` are fakes that record their calls and play root or a user. The fake
``apt-get install`` puts the tools of the packages it delivers on the PATH (as working versions), so the
script's check after installing sees what a real install would have left missing. So the test sees the
decision itself (which Debian packages for which missing tool) and what is done with it, and installs
nothing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.workers import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "install-deps"
BASH = "/bin/bash"
EVERYTHING = ("python3", "java", "mvn", "redis-server", "chromium", "chromedriver", "promtool")
JAVA_17 = 'openjdk version "17.0.15" 2025-04-15'
# a Debian package -> the tool it puts on the PATH and that tool's stub (a working version)
PROVIDES = {
    "python3": ("python3", "exit 0"),
    "openjdk-17-jre-headless": ("java", f"echo '{JAVA_17}' >&2"),
    "maven": ("mvn", "exit 0"),
    "redis-server": ("redis-server", "exit 0"),
    "chromium": ("chromium", "exit 0"),
    "chromium-driver": ("chromedriver", "exit 0"),
    "prometheus": ("promtool", "exit 0"),
    "gcc": ("gcc", "exit 0"),
    "python3-dev": ("python3", "exit 0"),  # a python3 whose headers are there
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    apt: list[list[str]]  # each apt-get call's arguments


def run(
    tmp_path: Path,
    *args: str,
    tools: tuple[str, ...] = EVERYTHING,
    uid: int = 0,
    java: str = JAVA_17,
    python_ok: bool = True,
    compiler: bool = True,
    headers: bool = True,
    docker_engine: bool | None = None,
    apt: bool = True,
    delivers: tuple[str, ...] = tuple(PROVIDES),
) -> Run:
    """scripts/install-deps with only ``tools`` on PATH (plus ``id`` saying ``uid``, ``gcc`` unless not
    ``compiler``, and ``apt-get``, whose install puts the tools of the packages in ``delivers`` on the PATH);
    ``headers``: whether python3's probe for Python.h succeeds."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    calls = tmp_path / "apt-calls"
    repo = tmp_path / "repo"
    for package in delivers:
        tool, body = PROVIDES[package]
        (repo / package).mkdir(parents=True)
        (repo / package / tool).write_text(f"#!{BASH}\n{body}\n")
        (repo / package / tool).chmod(0o755)
    stubs = {tool: "exit 0" for tool in tools}
    if "java" in tools:
        stubs["java"] = f"echo '{java}' >&2"  # java -version writes to stderr
    if "python3" in tools:
        stubs["python3"] = "exit 0" if python_ok else "exit 1"  # the version/venv probe's verdict
        if python_ok and not headers:  # the Python.h probe fails, the others pass
            stubs["python3"] = 'case "$*" in *Python.h*) exit 1 ;; esac\nexit 0'
    if compiler:
        stubs["gcc"] = "exit 0"
    if docker_engine is not None:
        stubs["docker"] = "exit 0" if docker_engine else "exit 1"  # docker info
    stubs["id"] = f"echo {uid}"
    if apt:
        stubs["apt-get"] = (
            f'echo "$*" >> {calls}\n'
            f'if [ "$1" = install ]; then for p in "$@"; do '
            f'if [ -d {repo}/"$p" ]; then /bin/cp {repo}/"$p"/* {bin_}/; fi; done; fi'
        )
    for name, body in stubs.items():
        path = bin_ / name
        path.write_text(f"#!{BASH}\n{body}\n")
        path.chmod(0o755)
    done = subprocess.run(
        [BASH, str(SCRIPT), *args],
        env={"PATH": str(bin_)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    logged = calls.read_text().splitlines() if calls.exists() else []
    return Run(done.returncode, done.stdout, done.stderr, [line.split() for line in logged])


def installed(result: Run) -> list[str]:
    """The packages of the one ``apt-get install``, after one ``apt-get update``."""
    assert result.apt[0] == ["update", "-qq"] and len(result.apt) == 2, result.apt
    verb, *options_and_packages = result.apt[1]
    assert verb == "install"
    return [a for a in options_and_packages if not a.startswith("-")]


def test_a_complete_machine_installs_nothing(tmp_path: Path) -> None:
    result = run(tmp_path, "--test")
    assert (result.returncode, result.apt, result.stderr) == (0, [], "")


def test_a_fresh_machine_as_root_gets_everything_with_one_update(tmp_path: Path) -> None:
    result = run(tmp_path, "--test", tools=(), compiler=False)
    assert result.returncode == 0, result.stderr
    assert installed(result) == [
        "python3",
        "python3-venv",
        "openjdk-17-jre-headless",
        "maven",
        "redis-server",
        "gcc",
        "chromium",
        "chromium-driver",
        "prometheus",
    ]
    assert "-y" in result.apt[1] and "--no-install-recommends" in result.apt[1]


@pytest.mark.parametrize(
    ("missing", "packages"),
    [
        ("mvn", ["maven"]),
        ("redis-server", ["redis-server"]),
        ("chromedriver", ["chromium-driver"]),
        ("chromium", ["chromium"]),
        ("promtool", ["prometheus"]),
        ("java", ["openjdk-17-jre-headless"]),
        ("python3", ["python3", "python3-venv"]),
    ],
)
def test_each_missing_tool_maps_to_its_debian_packages(
    tmp_path: Path, missing: str, packages: list[str]
) -> None:
    result = run(tmp_path, "--test", tools=tuple(t for t in EVERYTHING if t != missing))
    assert result.returncode == 0 and installed(result) == packages


@pytest.mark.parametrize(
    ("version", "enough"),
    [
        ('openjdk version "11.0.2" 2019-01-15', False),
        ('java version "1.8.0_292"', False),
        (JAVA_17, True),
        ('openjdk version "21.0.1" 2023-10-17', True),
        ("no version at all", False),
    ],
)
def test_java_older_than_17_is_replaced(tmp_path: Path, version: str, enough: bool) -> None:
    result = run(tmp_path, java=version)
    assert result.returncode == 0
    assert (result.apt == []) == enough
    if not enough:
        assert installed(result) == ["openjdk-17-jre-headless"]


def test_the_compiled_engine_path_needs_a_compiler_and_python_s_headers(tmp_path: Path) -> None:
    """features._native is built at install (setup.py): gcc, and Python.h of the Python bootstrap picks
    (Debian's: python3-dev); a Python too old or without venv is replaced first, so not probed."""
    assert installed(run(tmp_path / "a", compiler=False)) == ["gcc"]
    assert installed(run(tmp_path / "b", headers=False)) == ["python3-dev"]
    assert installed(run(tmp_path / "c", "--test", compiler=False, headers=False)) == ["gcc", "python3-dev"]
    assert "python3-dev" not in installed(run(tmp_path / "d", python_ok=False, headers=False))


def test_a_python_without_venv_or_too_old_needs_python3_venv(tmp_path: Path) -> None:
    result = run(tmp_path, python_ok=False)
    assert installed(result) == ["python3", "python3-venv"]


def test_chromium_only_for_the_tests(tmp_path: Path) -> None:
    bare = ("python3", "java", "mvn", "redis-server")
    assert run(tmp_path / "a", tools=bare).apt == []  # scripts/quickstart: no browser
    assert installed(run(tmp_path / "b", "--test", tools=bare)) == [
        "chromium",
        "chromium-driver",
        "prometheus",
    ]


def test_a_docker_engine_replaces_java_and_maven(tmp_path: Path) -> None:
    """scripts/services runs Kafka in docker compose when a Docker engine answers."""
    assert run(tmp_path / "a", tools=("python3", "redis-server"), docker_engine=True).apt == []
    # a docker command without an engine is no Docker
    idle = run(tmp_path / "b", tools=("python3", "redis-server"), docker_engine=False)
    assert installed(idle) == ["openjdk-17-jre-headless", "maven"]


def test_the_tests_need_java_and_maven_even_with_a_docker_engine(tmp_path: Path) -> None:
    """scripts/test starts private brokers (KafkaNode) from the jars, whatever runs the shared Kafka."""
    result = run(
        tmp_path,
        "--test",
        tools=("python3", "redis-server", "chromium", "chromedriver", "promtool"),
        docker_engine=True,
    )
    assert installed(result) == ["openjdk-17-jre-headless", "maven"]


def test_a_user_gets_the_list_and_the_command_and_a_failure(tmp_path: Path) -> None:
    result = run(tmp_path, "--test", tools=("python3", "java", "mvn", "chromium"), uid=1000)
    assert result.returncode == 1 and result.apt == []
    assert "lacks: redis-server chromium-driver" in result.stderr
    assert "sudo apt-get install --no-install-recommends redis-server chromium-driver" in result.stderr
    assert "sudo scripts/install-deps --test" in result.stderr


def test_root_without_apt_get_gets_the_list_and_a_failure(tmp_path: Path) -> None:
    result = run(tmp_path, tools=("python3", "java", "mvn"), apt=False)
    assert result.returncode == 1
    assert "lacks: redis-server" in result.stderr and "package manager" in result.stderr


def test_check_reports_and_installs_nothing_even_as_root(tmp_path: Path) -> None:
    missing = run(tmp_path / "a", "--check", tools=("python3", "java", "redis-server"))
    assert (missing.returncode, missing.apt) == (1, []) and "missing: maven" in missing.stdout
    assert run(tmp_path / "b", "--check").returncode == 0


def test_what_apt_get_could_not_provide_is_listed_after_installing(tmp_path: Path) -> None:
    """A release whose python3 is older than 3.11 (Debian 11, Ubuntu 20.04): apt-get installs python3 and
    the check after it still fails, so the script says so and fails instead of reporting success."""
    too_old = run(tmp_path / "a", python_ok=False, delivers=("maven",))
    assert installed(too_old) == ["python3", "python3-venv"]
    assert too_old.returncode == 1
    assert "still missing after apt-get install: python3 python3-venv" in too_old.stderr
    assert "Python >= 3.11" in too_old.stderr
    # Ubuntu's chromium snap in a container: the package installs, the browser does not run
    snap = run(
        tmp_path / "b",
        "--test",
        tools=("python3", "java", "mvn", "redis-server", "promtool"),
        delivers=("chromium",),
    )
    assert installed(snap) == ["chromium", "chromium-driver"]
    assert snap.returncode == 1 and "still missing after apt-get install: chromium-driver" in snap.stderr
    assert "snap" in snap.stderr
    # what apt-get did provide is not listed again
    done = run(tmp_path / "c", "--test", tools=("python3", "java", "mvn", "redis-server"))
    assert (done.returncode, done.stderr) == (0, "")


def test_a_user_is_told_about_ubuntu_s_chromium_snap(tmp_path: Path) -> None:
    result = run(tmp_path, "--test", tools=("python3", "java", "mvn", "redis-server"), uid=1000)
    assert result.returncode == 1 and "lacks: chromium chromium-driver" in result.stderr
    assert "snap" in result.stderr and "containers" in result.stderr
