"""The dashboard in headless Chromium (Debian's ``chromium`` and ``chromedriver``, driven by selenium) against
a registry holding hostile names: a model named like an ``<img onerror>``, a drift detector and a metric
named like a ``<script>``, and checkpoint values of the wrong type carrying markup (a learned count that is
an ``<img onerror>``). Each would run as script where the page built HTML from data (it did, through
``innerHTML``, for the learned counts: stored XSS). Now: no script runs (``window.__pwned`` stays
undefined), every name is shown literally as text, and the data need the read key, which the page asks
for."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streaming.settings import Settings
from tests.serving.running import running
from tests.support.api_env import KEYS, Embedded, keyed
from tests.support.browser import headless_chrome

pytestmark = pytest.mark.integration

NAME = '<img src=x onerror="window.__pwned=1">'
DETECTOR = "<script>window.__pwned=2</script>"
METRIC = "<img src=x onerror=window.__pwned=3>"
LEARNED = "<img src=x onerror=window.__pwned=4>"
SAMPLE_DETECTOR = "<script>window.__pwned=5</script><img src=x onerror=window.__pwned=6>"
QUARANTINE = "ValueError: <img src=x onerror=window.__pwned=7>"


def hostile_registry(settings: Settings, **update: Any) -> Embedded:
    emb = Embedded(keyed(settings, **update))
    now = time.time()
    emb.save(
        NAME,
        header={
            "n_learned": LEARNED,
            "saved_at": now,
            "metrics": {METRIC: 0.5, "Accuracy": 0.75},
            "drifts": [[DETECTOR, 1_700_000_000_000, LEARNED, []]],
        },
    )
    for i in range(3):
        emb.registry.record(
            NAME,
            {
                "t": now - 30 + 10 * i,
                "version": 1,
                "learned": 100 * i,
                "rate": 10.0,
                "metrics": {METRIC: 0.5, "Accuracy": 0.7},
                "freshness_ms": 5,
                "drifts": [[SAMPLE_DETECTOR, 1_700_000_000_000, LEARNED, []]] if i == 2 else [],
            },
        )
    emb.registry.record(NAME, {"t": now, "metrics": {}, "status": "quarantined", "quarantine": QUARANTINE})
    return emb


@pytest.fixture
def driver() -> Any:
    d = headless_chrome()
    yield d
    d.quit()


def test_hostile_names_are_shown_as_text_and_never_run(settings: Settings, driver: Any) -> None:
    """No keys (the loopback default: the data are open); before, the page ran the learned count's
    ``<img onerror>`` (``window.__pwned == 4``)."""
    from selenium.webdriver.support.ui import WebDriverWait

    emb = hostile_registry(
        settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[]
    )
    with running(emb.app()) as url:
        driver.get(f"{url}/dashboard")
        # a second rendering of the same data (the next refresh) runs nothing either
        WebDriverWait(driver, 30).until(lambda d: renders(d) >= 2)
        assert driver.execute_script("return window.__pwned") is None
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert_literal(driver)
        # what the browser was told: the policy that would have stopped an inline handler anyway
        policy = driver.execute_script(
            "return fetch('/dashboard').then(r => r.headers.get('content-security-policy'))"
        )
        assert "script-src 'self'" in policy and "object-src 'none'" in policy


def test_with_keys_the_page_asks_for_a_read_key(settings: Settings, driver: Any) -> None:
    """Keys configured: the page is the same static shell, its data need the read scope; the page asks for
    a key and renders once it has one (and still runs nothing)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    emb = hostile_registry(settings)
    with running(emb.app()) as url:
        driver.get(f"{url}/dashboard")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "auth").is_displayed())
        assert "read key" in driver.find_element(By.ID, "error").text
        assert driver.find_elements(By.CSS_SELECTOR, "section.model") == []  # no data without the key
        driver.find_element(By.ID, "key").send_keys(KEYS["score"])  # a key of another scope: refused
        driver.find_element(By.CSS_SELECTOR, "#auth button").click()
        WebDriverWait(driver, 30).until(lambda d: "read scope" in d.find_element(By.ID, "error").text)
        driver.find_element(By.ID, "key").clear()
        driver.find_element(By.ID, "key").send_keys(KEYS["read"])
        driver.find_element(By.CSS_SELECTOR, "#auth button").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
        )
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert_literal(driver)


def renders(driver: Any) -> int:
    """How many times the page has drawn its data (``data-renders``; 0 before the first)."""
    return int(driver.execute_script("return Number(document.body.dataset.renders || 0)"))


# what assert_literal reads of the page, in one script: the page redraws its tables every 2 s, and elements
# read one by one from Python could be replaced between two reads (a stale element)
SNAPSHOT = """
const models = document.getElementById("models");
const card = models.querySelector("section.model");
const texts = (sel) => [...card.querySelectorAll(sel)].map((e) => e.innerText);
return {
  markup: models.querySelectorAll("img, script").length,
  model: card.dataset.model,
  title: card.querySelector("h2").innerText,
  headers: texts(".versions th"),
  row: texts(".versions td"),
  drifts: texts("li.drift"),
  points: card.querySelector(".chart.metrics").dataset.points,
  quarantine: card.querySelector(".quarantine").innerText,
  text: card.innerText,
};
"""


def assert_literal(driver: Any) -> None:
    """Every hostile name is on the page as text; no element came from data."""
    page = driver.execute_script(SNAPSHOT)
    assert page["markup"] == 0  # no <img> or <script> made of data
    assert page["model"] == NAME
    assert page["title"] == NAME  # the name, literally
    assert METRIC in page["headers"]  # a metric name, literally
    assert page["row"][2] == "-"  # a learned count that is not a number is not shown at all
    drifts = page["drifts"]
    assert drifts and drifts[0].startswith(SAMPLE_DETECTOR) and "after - learned" in drifts[0]
    assert int(page["points"]) == 4
    assert QUARANTINE in page["quarantine"]  # its status, literally
    assert METRIC in page["text"] and "Accuracy" in page["text"]
    # the page works under its own policy: nothing of it was refused (its style block's hash is right)
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert refused == [], refused


def test_metric_names_of_objects_own_properties_chart_as_missing_values(
    settings: Settings, driver: Any
) -> None:
    """Before: a metric named ``constructor``, ``toString`` or ``__proto__`` (any name of a property every
    JavaScript object inherits) present in one sample was charted, for the samples without it, as the
    inherited function or object (``name in metrics`` is true for inherited properties) instead of a gap.
    Now only a sample's own metrics count. The page's chart calls are captured in the browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    emb = Embedded(
        keyed(settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[])
    )
    now = time.time()
    emb.save("m", header={"n_learned": 5, "saved_at": now, "metrics": {"Accuracy": 0.5}})
    inherited = {"constructor": 0.3, "toString": 0.2, "__proto__": 0.1, "hasOwnProperty": 0.4}
    for i in range(3):
        metrics = {"Accuracy": 0.5 + i / 10, **(inherited if i == 2 else {})}
        emb.registry.record("m", {"t": now - 30 + 10 * i, "learned": 10 * i, "rate": 1.0, "metrics": metrics})
    with running(emb.app()) as url:
        driver.get(f"{url}/dashboard")
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
        )
        driver.execute_script(
            "window.__series = []; const draw = RivuletCharts.lineChart;"
            "RivuletCharts.lineChart = (el, spec) => { if (spec.title === 'metrics') window.__series.push("
            "spec.series.map(s => [s.label, s.values.map(v => v === null ? null : typeof v)]));"
            "return draw(el, spec); };"
        )
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__series.length"))
        [series] = driver.execute_script("return window.__series.slice(0, 1)")
    charted = dict(series)
    assert set(charted) == {"Accuracy", *inherited}
    assert charted["Accuracy"] == ["number"] * 3
    for name in inherited:
        assert charted[name] == [None, None, "number"], (name, charted[name])


WHY = "<img src=x onerror=window.__pwned=8>"


def test_a_specs_champion_and_challengers_on_one_chart(settings: Settings, driver: Any) -> None:
    """Issue 14: the spec's own model and its challenger on one chart (the metric each learned on the same
    records, the serving one labelled), the promotion marked, the decisions listed as text (a hostile
    ``why`` included: shown literally, run nowhere)."""
    from selenium.webdriver.support.ui import WebDriverWait

    emb = Embedded(
        keyed(settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[])
    )
    now = time.time()
    for name, role in (("m", "probation"), ("m~5", "champion")):
        emb.save(name, header={"spec": "m", "role": role, "saved_at": now, "metrics": {"Accuracy": 0.8}})
        for i in range(4):
            value = 0.6 + 0.05 * i if name == "m" else 0.5 + 0.1 * i
            sample = {"t": now - 40 + 10 * i, "version": 1, "learned": 100 * i, "rate": 1.0,
                      "metrics": {"Accuracy": value}, "freshness_ms": 5, "drifts": []}  # fmt: skip
            emb.registry.record(name, sample)
    emb.registry.set_champion("m", "m~5")
    base = {"spec": "m", "champion": "m", "model": "m~5"}
    emb.registry.record_decision(
        "m", {**base, "id": "c", "kind": "challenger", "ts": 5, "why": "drift:loss", "saved_at": now - 30}
    )
    emb.registry.record_decision(
        "m",
        {**base, "id": "p", "kind": "promotion", "ts": 9, "why": WHY, "saved_at": now - 15,
         "evidence": {"n": 600, "p_value": 0.001}},
    )  # fmt: skip
    with running(emb.app()) as url:
        driver.get(f"{url}/dashboard")
        WebDriverWait(driver, 30).until(lambda d: renders(d) >= 2)
        page = driver.execute_script(
            """const box = document.querySelector('section[data-model="m"] .lifecycle');
            const chart = box.querySelector('.champions');
            return {hidden: box.hidden, points: chart.dataset.points, markers: chart.dataset.markers,
                    canvas: chart.querySelectorAll('canvas').length, text: box.textContent,
                    other: document.querySelector('section[data-model="m~5"] .lifecycle').hidden,
                    markup: box.querySelectorAll('img, script').length}"""
        )
        assert page["hidden"] is False and page["other"] is True  # the spec's card only
        assert page["points"] == "4" and page["markers"] == "1" and page["canvas"] >= 1
        assert "m~5 (serving)" in page["text"] and f"promotion m~5 (champion m) {WHY}" in page["text"]
        assert page["markup"] == 0 and driver.execute_script("return typeof window.__pwned") == "undefined"


LAG_TOPIC = "<img src=x onerror=window.__pwned=9>"


def test_each_stages_lag_is_shown_known_or_not(settings: Settings, driver: Any) -> None:
    """Issue 18: the page shows each stage's lag as the API measured it (``serving.lag``): the worst
    partition in records and in event time, the records over all partitions; a stage whose lag is not
    known says so and why, never 0. A hostile topic name and reason are shown literally, run nowhere."""
    from selenium.webdriver.support.ui import WebDriverWait

    from serving.app import create_app
    from serving.embedded import EmbeddedServices
    from serving.lag import LagWatcher
    from streaming.runtime.stage_lag import PartitionLag, StageLag

    emb = Embedded(
        keyed(settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[])
    )
    emb.save("m", header={"n_learned": 5, "saved_at": time.time(), "metrics": {"Accuracy": 0.5}})
    now = time.time()
    watcher = LagWatcher(dict, interval_s=60, timeout_s=1)  # never started: its measurement is set here
    waiting = int((now - 600) * 1000)  # the oldest record waiting on partition 0: 10 minutes old
    watcher.last = {
        "features": StageLag(
            "features",
            [
                PartitionLag(LAG_TOPIC, 0, end=10, position=4, event_ms=waiting),
                PartitionLag(LAG_TOPIC, 1, end=3, position=1, event_ms=int(now * 1000)),
                PartitionLag(LAG_TOPIC, 2, end=3, position=3),
            ],
            measured_at=now,
        ),
        "learner": StageLag("learner", problems=[f"Kafka: KafkaTimeoutError: {LAG_TOPIC}"], measured_at=now),
    }
    services = EmbeddedServices(emb.settings, emb.stack)
    services.lag = watcher
    with running(create_app(emb.settings, services)) as url:
        driver.get(f"{url}/dashboard")
        WebDriverWait(driver, 30).until(lambda d: renders(d) >= 1)
        page = driver.execute_script(
            """const box = document.getElementById('lag');
            const row = (s) => [...box.querySelectorAll(`tr[data-stage="${s}"] td`)].map((e) => e.innerText);
            return {hidden: box.hidden, features: row('features'), learner: row('learner'),
                    unknown: box.querySelectorAll('tr.unknown').length,
                    markup: box.querySelectorAll('img, script').length}"""
        )
    assert page["hidden"] is False and page["markup"] == 0
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    stage, records, seconds, total, _, state = page["features"]
    assert (stage, records, total, state) == ("features", f"6 on {LAG_TOPIC}[0]", "8", "known")
    minutes, _, where = seconds.partition(" min on ")
    # now minus the event time 10 minutes back, drawn a little later (a loaded machine: up to minutes)
    assert 10.0 <= float(minutes) < 20.0 and where == f"{LAG_TOPIC}[0]"
    stage, records, seconds, total, _, state = page["learner"]
    assert (records, seconds, total) == ("not known", "not known", "not known")  # never 0
    assert state == f"not known: Kafka: KafkaTimeoutError: {LAG_TOPIC}" and page["unknown"] == 1
