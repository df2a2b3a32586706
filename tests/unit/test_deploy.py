"""The deployment files hold together: every Rivulet service of docker-compose.yml runs a real subcommand,
has a health check and waits for healthy Kafka and Redis; the Prometheus config scrapes what the processes
expose; every metric the Grafana dashboard queries is one Rivulet defines. (No Docker engine here: the
files are checked, not run; the same processes run under ``rivulet up`` in the integration tests.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from typer.main import get_command

from streaming.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _defined_metrics() -> set[str]:
    names = set()
    for path in [*(ROOT / "serving").glob("**/*.py"), *(ROOT / "streaming").glob("**/*.py")]:
        names |= set(re.findall(r'"(rivulet_[a-z_]+)"', path.read_text()))
    return names


def test_every_rivulet_process_is_a_service_with_a_health_check() -> None:
    cli = get_command(app)
    for name in ("features", "learner", "api"):
        svc = SERVICES[name]
        assert svc["image"] == "rivulet:latest" and svc["build"] == "."
        assert "test" in svc["healthcheck"]
        command = svc["command"]
        ctx_cmd = cli.commands[command[0]]  # type: ignore[attr-defined]
        if len(command) > 1 and hasattr(ctx_cmd, "commands"):
            ctx_cmd = ctx_cmd.commands[command[1]]
        options = {o for p in ctx_cmd.params for o in p.opts}
        assert {a for a in command if a.startswith("--")} <= options, (name, command)
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"
        env = svc["environment"]
        assert env["RIVULET_KAFKA_BOOTSTRAP"] == "kafka:19092" and env["RIVULET_REDIS_URL"].startswith(
            "redis://redis"
        )
    for name in ("kafka", "redis"):
        assert "test" in SERVICES[name]["healthcheck"]
    assert SERVICES["api"]["environment"]["RIVULET_SERVE_HOST"] == "0.0.0.0"


def test_monitoring_profile_scrapes_and_charts_real_metrics() -> None:
    assert SERVICES["prometheus"]["profiles"] == SERVICES["grafana"]["profiles"] == ["monitoring"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"api:8000", "features:9101"}
    assert "9101" in " ".join(SERVICES["features"]["command"])
    dash = json.loads((ROOT / "deploy/grafana/dashboards/rivulet.json").read_text())
    queried = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for p in dash["panels"]
        for t in p["targets"]
        for m in re.findall(r"rivulet_[a-z_]+", t["expr"])
    }
    defined = _defined_metrics()
    assert queried and queried <= defined, queried - defined


def test_the_image_installs_the_three_packages() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("features", "streaming", "serving"):
        assert f"COPY {package} {package}" in text
    assert 'ENTRYPOINT ["rivulet"]' in text


def test_the_learner_alone_gets_the_signing_key_and_nothing_starts_without_keys() -> None:
    """Compose passed ``${RIVULET_SIGNING_SECRET:-}`` to every service, so an unset secret became an
    empty HMAC key in the API. Now the private key goes to the learner alone and is required (``:?``), the
    API requires its verify keys, and no service reads the old secret."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert "RIVULET_SIGNING_SECRET" not in text
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        assert ("RIVULET_SIGNING_KEY" in env) == (name == "learner"), name
    assert SERVICES["learner"]["environment"]["RIVULET_SIGNING_KEY"].startswith("${RIVULET_SIGNING_KEY:?")
    assert SERVICES["api"]["environment"]["RIVULET_VERIFY_KEYS"].startswith("${RIVULET_VERIFY_KEYS:?")
