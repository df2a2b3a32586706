"""The deployment files hold together: every Rivulet service of docker-compose.yml runs a real subcommand,
has a health check and waits for healthy Kafka and Redis; the Prometheus config scrapes what the processes
expose; every metric the Grafana dashboard queries is one Rivulet defines. (No Docker engine here: the
files are checked, not run; the same processes run under ``rivulet up`` in the integration tests.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from streaming.cli import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SIGNER_PUBLIC = (
    "A" * 43 + "="
)  # a well-formed Ed25519 public key (32 zero bytes): serve gets past its keyring


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
    assert targets == {"api:8000", "features:9101", "learner:9102"}
    assert "9101" in " ".join(SERVICES["features"]["command"])
    assert "--metrics-port 9102" in " ".join(SERVICES["learner"]["command"])
    assert prom["rule_files"] == ["alerts.yml"]
    mounts = " ".join(SERVICES["prometheus"]["volumes"])
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in mounts
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
    # the compiled engine path: built where a compiler is (the first stage), required where it runs
    assert "COPY pyproject.toml setup.py" in text and "gcc" in text and "RIVULET_FEATURES_NATIVE=true" in text


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


def _expanded(value: str) -> str:
    """A Compose value with its ``${VAR:-default}`` references at their defaults (an unset environment)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_api_answers_prometheus_by_its_compose_name_with_a_read_key() -> None:
    """Before: the API bound to 0.0.0.0 kept the default trusted hosts (the bind address and loopback), so
    Prometheus scraping ``api:8000`` got ``400 Invalid host header``, and the scrape sent no key, so with keys
    set ``/metrics`` was a 401. Now Compose sets ``RIVULET_TRUSTED_HOSTS`` (with ``api``) and passes the API
    keys, and Prometheus sends ``RIVULET_PROMETHEUS_API_KEY`` from a Compose config as a Bearer credential.
    The app is built from the API service's environment (at its defaults, plus keys) and scraped as
    Prometheus and the health check do."""
    from fastapi.testclient import TestClient

    from streaming.settings import Settings
    from tests.support.api_env import Embedded, keyed

    env = SERVICES["api"]["environment"]
    for scope in ("SCORING", "INGEST", "READ", "ADMIN"):
        assert env[f"RIVULET_{scope}_API_KEYS"] == f"${{RIVULET_{scope}_API_KEYS:-}}"
    hosts = _expanded(env["RIVULET_TRUSTED_HOSTS"])
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "rivulet-api"]
    assert job["authorization"]["type"] == "Bearer"
    [mounted] = SERVICES["prometheus"]["configs"]
    assert mounted["target"] == job["authorization"]["credentials_file"]
    assert COMPOSE["configs"][mounted["source"]]["content"] == "${RIVULET_PROMETHEUS_API_KEY:-}"
    [target] = job["static_configs"][0]["targets"]
    health = re.search(r"http://([^/']+)/healthz", " ".join(SERVICES["api"]["healthcheck"]["test"]))
    assert health is not None

    settings = Settings(serve_host=env["RIVULET_SERVE_HOST"], trusted_hosts=hosts)
    emb = Embedded(keyed(settings, read_api_keys=["prom-key"]))
    with TestClient(emb.app(), base_url=f"http://{target}") as prometheus:
        assert prometheus.get("/metrics").status_code == 401  # keys set: no anonymous scrape
        scraped = prometheus.get("/metrics", headers={"Authorization": "Bearer prom-key"})
        assert scraped.status_code == 200 and "rivulet_http_requests_total" in scraped.text
        assert prometheus.get("/healthz", headers={"host": health.group(1)}).status_code == 200
        assert prometheus.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def test_the_compose_api_refuses_to_start_anonymous_unless_allowed() -> None:
    """Before: Compose's API bound 0.0.0.0 with no key by default: anyone on the Compose network could
    score, write training data and read. Now, at Compose's defaults (no key), building the app fails with
    AnonymousApi, and ``rivulet serve`` says so on one line; ``RIVULET_ALLOW_ANONYMOUS=true`` (passed by
    Compose) or one key of any scope lets it start; on loopback (``rivulet up``, the demo) it starts open."""
    import pytest
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from serving.app import create_app
    from serving.errors import AnonymousApi
    from streaming.settings import Settings
    from tests.support.api_env import Embedded

    env = SERVICES["api"]["environment"]
    assert env["RIVULET_ALLOW_ANONYMOUS"] == "${RIVULET_ALLOW_ANONYMOUS:-false}"
    compose = {k: _expanded(str(v)) for k, v in env.items() if k.startswith("RIVULET_") and "API_KEYS" in k}
    assert all(compose[f"RIVULET_{s}_API_KEYS"] == "" for s in ("SCORING", "INGEST", "READ", "ADMIN"))
    at_defaults = Settings(
        serve_host=env["RIVULET_SERVE_HOST"],
        allow_anonymous=_expanded(env["RIVULET_ALLOW_ANONYMOUS"]),
        features_module="tests.support.feature_defs",
    )
    with pytest.raises(AnonymousApi, match="RIVULET_ALLOW_ANONYMOUS=true"):
        create_app(at_defaults)
    with pytest.raises(AnonymousApi):
        Embedded(at_defaults).app()  # whatever the services
    for allowed in (
        at_defaults.model_copy(update={"allow_anonymous": True}),
        at_defaults.model_copy(update={"read_api_keys": ["r"]}),
        at_defaults.model_copy(update={"serve_host": "127.0.0.1"}),
    ):
        with TestClient(Embedded(allowed).app(), base_url="http://localhost") as client:
            assert client.get("/healthz").status_code == 200
    served = CliRunner().invoke(
        app,
        ["serve", "--host", "0.0.0.0", "--port", "1"],
        env={"RIVULET_VERIFY_KEYS": SIGNER_PUBLIC, "RIVULET_ALLOW_ANONYMOUS": "false", **compose},
    )
    assert served.exit_code == 1 and "RIVULET_ALLOW_ANONYMOUS=true" in served.output, served.output
    assert "Traceback" not in served.output
