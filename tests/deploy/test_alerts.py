"""The alert rules of ``deploy/prometheus/alerts.yml``: valid for Prometheus (``promtool check rules``), each
unit-tested (``promtool test rules``) firing on the series that should fire it and silent on a healthy one,
and each with a summary, a description and a runbook entry that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import required_tool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"
RUNBOOK = ROOT / "docs/runbook.md"


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _promtool() -> str:
    return required_tool("promtool", "prometheus")


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, cwd=RULE_TESTS.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_each_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in test["alert_rule_test"]:
            cases.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
    names = {a["alert"] for a in _alerts()}
    assert set(cases) == names
    for name, fired in cases.items():
        assert True in fired and False in fired, name


def test_each_alert_says_what_and_where_the_runbook_is() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)
    }
    for alert in _alerts():
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        path, _, anchor = notes["runbook"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (alert["alert"], anchor)
        assert alert["labels"]["severity"] in ("page", "ticket")
