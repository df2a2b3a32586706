"""The scoring API under hostile callers (issue 11): scopes and keys, the key check before the body, trusted
hosts, the body limit chunked or not, numbers outside the domain, labels a model cannot take, security
headers, the typed dashboard data, the learner's rejections on /metrics, and a stalled Redis that must not
block the event loop. Each test fails on the code before issue 11 (see each docstring).

All but the last run on the embedded services (no Kafka, no Redis); the last uses a TCP server that accepts
Redis connections and never answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from features.store import FeatureRow
from serving.app import create_app
from serving.metrics import REQUESTS
from streaming.settings import Settings
from tests.serving.running import running
from tests.support.api_env import KEYS, Embedded, keyed

pytestmark = pytest.mark.integration

PREDICT = ("POST", "/v1/models/zipm/predict", {"entity": "7"})
ROUTES: dict[str, list[tuple[str, str, Any]]] = {
    "score": [PREDICT, ("POST", "/v1/models/zipm/predict/batch", {"items": [{"entity": "7"}]})],
    "ingest": [
        ("POST", "/v1/events", {"events": [{"entity": "a", "ts": 1_700_000_000_000, "fields": {"x": 1}}]}),
        ("POST", "/v1/labels", {"labels": [{"event_id": "e1", "label": True}]}),
    ],
    "read": [
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/zipm", None),
        ("GET", "/v1/dashboard", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ],
    "admin": [("POST", "/v1/models/zipm/promote/1", None)],
}
PUBLIC = ["/healthz", "/readyz", "/dashboard", "/assets/dashboard.js"]


@pytest.fixture
def emb(settings: Settings) -> Embedded:
    e = Embedded(keyed(settings))
    e.save()
    return e


def call(client: Any, method: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return (
        client.request(method, path, json=body, **kw)
        if body is not None
        else client.request(method, path, **kw)
    )


def test_every_route_but_health_and_the_page_needs_a_key_of_its_own_scope(emb: Embedded) -> None:
    """Before: /v1/models, /v1/dashboard and /metrics answered anonymously with keys set, and the scoring key
    wrote training data (/v1/events, /v1/labels)."""
    with emb.client() as anonymous:
        for path in PUBLIC:
            assert anonymous.get(path).status_code == 200, path
        for scope, routes in ROUTES.items():
            for method, path, body in routes:
                r = call(anonymous, method, path, body)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", (path, r.text)
                wrong = call(anonymous, method, path, body, headers={"X-API-Key": "not-a-key"})
                assert wrong.status_code == 403, (path, wrong.text)
                for other, key in KEYS.items():
                    r = call(anonymous, method, path, body, headers={"X-API-Key": key})
                    allowed = other == scope or (other == "admin" and scope == "read")  # admin implies read
                    if allowed:
                        assert r.status_code in (200, 202), (path, other, r.status_code, r.text)
                    else:
                        assert r.status_code == 403 and r.json()["error"] == "forbidden", (
                            path,
                            other,
                            r.text,
                        )
        # the bearer form (what Prometheus sends) is the same key
        assert (
            anonymous.get("/metrics", headers={"Authorization": f"Bearer {KEYS['read']}"}).status_code == 200
        )


def test_without_any_key_configured_the_api_is_open_but_admin(settings: Settings) -> None:
    emb = Embedded(
        keyed(settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[])
    )
    emb.save()
    with emb.client() as client:
        for scope, routes in ROUTES.items():
            for method, path, body in routes:
                r = call(client, method, path, body)
                if scope == "admin":
                    assert r.status_code == 403 and "no RIVULET_ADMIN_API_KEYS" in r.json()["detail"]
                else:
                    assert r.status_code in (200, 202), (path, r.text)


def test_the_key_is_checked_before_the_body(emb: Embedded) -> None:
    """Before: a malformed body got 422 before the scoring key was checked (and 400 on the ingest routes)."""
    with emb.client() as client:
        for path in ("/v1/models/zipm/predict", "/v1/events", "/v1/labels", "/v1/models/zipm/predict/batch"):
            for body in (b"{not json", b'{"entity": 1, "extra": []}', b""):
                r = client.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 401, (path, body, r.text)
        bad = client.post(
            "/v1/models/zipm/predict",
            content=b"{not json",
            headers={"content-type": "application/json", "X-API-Key": KEYS["score"]},
        )
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"


def test_only_trusted_hosts_are_answered(settings: Settings) -> None:
    """Before: any Host was answered (DNS rebinding reaches a loopback API)."""
    emb = Embedded(keyed(settings))
    with emb.client() as client:
        for host in ("localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "127.0.0.1"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        refused = REQUESTS.labels("unmatched", "400")._value.get()
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil"):
            r = client.get("/healthz", headers={"host": host})
            assert r.status_code == 400, host
            assert r.headers["x-content-type-options"] == "nosniff"  # Measure is outside TrustedHosts
        assert REQUESTS.labels("unmatched", "400")._value.get() == refused + 4  # refused Hosts are counted
    for hosts, host, status in (
        (["api.example.com"], "api.example.com:443", 200),
        (["api.example.com"], "localhost", 400),
        (["*"], "anything.example", 200),
    ):
        e = Embedded(keyed(settings, trusted_hosts=hosts))
        with e.client() as client:
            assert client.get("/healthz", headers={"host": host}).status_code == status, (hosts, host)
    bound = Embedded(keyed(settings, serve_host="10.1.2.3"))
    with bound.client() as client:
        assert client.get("/healthz", headers={"host": "10.1.2.3:8000"}).status_code == 200


def test_a_body_over_the_limit_is_413_chunked_or_not(settings: Settings) -> None:
    """Before: a chunked body over the limit got 400 (FastAPI's body parsing swallowed the signal)."""
    emb = Embedded(keyed(settings, max_request_bytes=4096))
    emb.save()
    big = b'{"entity": "7", "fields": {"x": "' + b"a" * 10_000 + b'"}}'

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    with emb.client("score") as client:
        for path in ("/v1/models/zipm/predict", "/v1/events", "/v1/labels"):
            key = {"X-API-Key": KEYS["ingest"]} if path.startswith("/v1/e") or "labels" in path else {}
            declared = client.post(path, content=big, headers={"content-type": "application/json", **key})
            assert declared.status_code == 413 and declared.json()["error"] == "too_large", declared.text
            chunked = client.post(path, content=chunks(), headers={"content-type": "application/json", **key})
            assert chunked.status_code == 413 and chunked.json()["error"] == "too_large", (path, chunked.text)
        small = client.post(
            "/v1/models/zipm/predict",
            content=b'{"entity": "7"}',
            headers={"content-type": "application/json"},
        )
        assert small.status_code == 200


def test_numbers_outside_the_domain_are_refused_never_a_500(emb: Embedded) -> None:
    """Before: 10**400 in a predict field was a 500 (a view that takes request fields overflowed deriving
    from it), 2**64 accepted where the rest of Rivulet refuses it."""
    headers = {"content-type": "application/json"}
    emb.save("allm", header={"view": "all"})  # a model of the view that takes request fields
    with emb.client("score") as score, emb.client("ingest") as ingest:
        for raw in (b"1" + b"0" * 400, str(2**64).encode()):
            body = b'{"entity": "7", "fields": {"salary": ' + raw + b', "age": 30}}'
            r = score.post("/v1/models/allm/predict", content=body, headers=headers)
            assert r.status_code == 422 and "fields.salary" in r.json()["detail"], (raw[:20], r.text)
        r = score.post("/v1/models/allm/predict", json={"entity": "7", "fields": {"salary": 1e308}})
        assert r.status_code == 400 and r.json()["error"] == "unscorable" and "sal" in r.json()["detail"], (
            r.text
        )
        ok = score.post("/v1/models/allm/predict", json={"entity": "7", "fields": {"salary": 52_000.0}})
        assert ok.status_code == 200, ok.text
        for raw in (b"1" + b"0" * 400, str(2**64).encode(), str(-(2**63) - 1).encode(), b"1e400"):
            body = b'{"entity": "7", "fields": {"salary_mean_10m": ' + raw + b"}}"
            r = score.post("/v1/models/zipm/predict", content=body, headers=headers)
            assert r.status_code == 422 and "fields.salary_mean_10m" in r.json()["detail"], (raw[:20], r.text)
            batch = b'{"items": [{"entity": "7"}, ' + body + b"]}"
            r = score.post("/v1/models/zipm/predict/batch", content=batch, headers=headers)
            assert r.status_code == 422 and "items.1" in r.json()["detail"], r.text
            event = b'{"events": [{"entity": "a", "ts": 1700000000000, "fields": {"n": ' + raw + b"}}]}"
            r = ingest.post("/v1/events", content=event, headers=headers)
            assert r.status_code == 422 and "events.0.fields.n" in r.json()["detail"], r.text
            label = b'{"labels": [{"event_id": "e", "label": ' + raw + b"}]}"
            assert ingest.post("/v1/labels", content=label, headers=headers).status_code == 422
        # a vector beyond what a model may see (the learner's domain, |x| <= 1e150; a Hoeffding tree overflows
        # on 1e308): a 400 naming the item and the feature, not a model's OverflowError
        big = {"count_lifetime": 3, "salary_mean_10m": 1e308, "loan_max_lifetime": -1e200}
        asyncio.run(emb.stack.store.write([FeatureRow("zip", "big", big, 1_700_000_000_000)]))
        r = score.post("/v1/models/zipm/predict", json={"entity": "big"})
        assert r.status_code == 400 and r.json()["error"] == "unscorable", r.text
        assert "salary_mean_10m" in r.json()["detail"] and r.json()["detail"].startswith("body:")
        r = score.post("/v1/models/zipm/predict/batch", json={"items": [{"entity": "7"}, {"entity": "big"}]})
        assert r.status_code == 400 and r.json()["detail"].startswith("items[1]:"), r.text
        # the edges of the domain are accepted
        for value in (2**63 - 1, -(2**63), 1e150, 0.5):
            r = score.post(
                "/v1/models/zipm/predict", json={"entity": "7", "fields": {"count_lifetime": value}}
            )
            assert r.status_code == 200, (value, r.text)
    published = emb.log.end(emb.settings.topics.predictions)
    assert published == 5  # only the five good requests reached the predictions topic


def test_labels_must_fit_a_served_model(settings: Settings) -> None:
    """Before: {"label": "banana"} for a binary model was accepted (202) and killed the learner."""
    emb = Embedded(keyed(settings))
    topic = emb.settings.topics.labels
    with emb.client("ingest") as client:  # no model loaded yet: accepted; the learner's router checks again
        assert (
            client.post("/v1/labels", json={"labels": [{"event_id": "e0", "label": "banana"}]}).status_code
            == 202
        )
    assert emb.log.end(topic) == 1
    emb.save()
    with emb.client("ingest") as client:
        good = [
            {"event_id": "e1", "label": True},
            {"prediction_id": "p1", "label": 0},
            {"event_id": "e2", "label": 1.0},
        ]
        assert client.post("/v1/labels", json={"labels": good}).status_code == 202
        assert emb.log.end(topic) == 4
        for bad in ("banana", 2, 0.5, -1):
            r = client.post("/v1/labels", json={"labels": [good[0], {"event_id": "e3", "label": bad}]})
            assert r.status_code == 400 and r.json()["error"] == "invalid_label", r.text
            assert r.json()["detail"].startswith("labels[1].label:") and "binary" in r.json()["detail"]
        assert emb.log.end(topic) == 4  # nothing of a refused request was published
    # a regression model beside it: a number fits one of the served kinds
    emb.save("price", state=_regressor())
    with emb.client("ingest") as client:
        assert (
            client.post("/v1/labels", json={"labels": [{"event_id": "e4", "label": 0.5}]}).status_code == 202
        )
        r = client.post("/v1/labels", json={"labels": [{"event_id": "e5", "label": "banana"}]})
        assert r.status_code == 400 and "regression" in r.json()["detail"] and "binary" in r.json()["detail"]


def test_labels_must_be_a_declared_class_when_the_checkpoint_names_them(settings: Settings) -> None:
    emb = Embedded(keyed(settings))
    emb.save("species", header={"classes": ["cat", "dog", 3]}, state=_multiclass())
    with emb.client("ingest") as client:
        for label in ("cat", "dog", 3):
            r = client.post("/v1/labels", json={"labels": [{"event_id": "e", "label": label}]})
            assert r.status_code == 202, (label, r.text)
        for label in ("banana", "3", True, 3.5):
            r = client.post("/v1/labels", json={"labels": [{"event_id": "e", "label": label}]})
            assert r.status_code == 400 and "label_class" in r.json()["detail"], (label, r.text)


def _multiclass() -> Any:
    from river import metrics as m
    from river import tree

    from streaming.learning.core import LearnerCore
    from streaming.learning.spec import ModelSpec

    spec = ModelSpec("species", "multiclass", "zip", tree.HoeffdingTreeClassifier, metrics=(m.Accuracy,))
    core = LearnerCore([spec])
    core.on_record("0", 0, {"count_lifetime": 1.0}, label="cat")
    return core.models["species"]


def _regressor() -> Any:
    from river import linear_model
    from river import metrics as m

    from streaming.learning.core import LearnerCore
    from streaming.learning.spec import ModelSpec

    core = LearnerCore(
        [ModelSpec("price", "regression", "zip", linear_model.LinearRegression, metrics=(m.MAE,))]
    )
    core.on_record("0", 0, {"count_lifetime": 1.0}, label=2.0)
    return core.models["price"]


def test_security_headers_and_the_dashboard_csp(emb: Embedded) -> None:
    """Before: no Content-Security-Policy on the dashboard, no nosniff."""
    with emb.client("read") as client:
        page = client.get("/dashboard")
        csp = {d.split(" ")[0]: d for d in page.headers["content-security-policy"].split("; ")}
        assert csp["script-src"] == "script-src 'self'"  # no inline script, no eval
        assert csp["object-src"] == "object-src 'none'" and csp["base-uri"] == "base-uri 'none'"
        assert (
            csp["frame-ancestors"] == "frame-ancestors 'none'" and csp["default-src"] == "default-src 'none'"
        )
        assert "<script>" not in page.text.replace("<script src=", "")  # every script is a file
        for path in ("/dashboard", "/v1/dashboard", "/healthz", "/assets/dashboard.js", "/nope"):
            assert client.get(path).headers["x-content-type-options"] == "nosniff", path
        assert client.post("/v1/models/zipm/predict", json={}).headers["x-content-type-options"] == "nosniff"


def test_dashboard_and_model_data_are_typed_not_passed_through(emb: Embedded) -> None:
    """Before: /v1/dashboard passed header values through as they were (a string where a count goes)."""
    emb.save(
        header={
            "n_learned": "<img src=x onerror=alert(1)>",
            "metrics": {"Accuracy": "<b>", "LogLoss": 0.25},
            "drifts": [["<script>x</script>", "soon", 3, []], "junk", 7],
            "rejected": {"label_type": 2, "x": "y"},
        }
    )
    emb.registry.record(
        "zipm", {"t": 5.0, "rate": "fast", "metrics": {"Accuracy": 0.5}, "drifts": [[1, 2]], "extra": "<b>"}
    )
    emb.registry.record("zipm", "not a sample")  # type: ignore[arg-type]
    emb.registry.record(
        "zipm", {"t": 6.0, "metrics": {}, "status": "quarantined", "quarantine": "ValueError: x"}
    )
    with emb.client("read") as client:
        m = client.get("/v1/dashboard").json()["models"]["zipm"]
        assert m["learned"] is None and m["metrics"] == {"Accuracy": None, "LogLoss": 0.25}
        assert m["rejected"] == {"label_type": 2}
        assert m["history"] == [
            {
                "t": 5.0,
                "learned": None,
                "rate": None,
                "freshness_ms": None,
                "metrics": {"Accuracy": 0.5},
                "drifts": [],
                "status": None,
                "quarantine": None,
            },
            {
                "t": 6.0,
                "learned": None,
                "rate": None,
                "freshness_ms": None,
                "metrics": {},
                "drifts": [],
                "status": "quarantined",
                "quarantine": "ValueError: x",
            },
        ]
        assert m["status"] == "quarantined" and m["quarantine"] == "ValueError: x"
        emb.registry.record(
            "zipm", {"t": 7.0, "metrics": {"Accuracy": 0.5}}
        )  # learning again after a restart
        m = client.get("/v1/dashboard").json()["models"]["zipm"]
        assert m["status"] == "ok" and m["quarantine"] is None
        info = client.get("/v1/models/zipm").json()
        assert info["drifts"] == [{"detector": "<script>x</script>", "ts": None, "learned": 3}]
        assert info["versions"][0]["n_learned"] is None and info["rejected"] == {"label_type": 2}


def test_metrics_export_the_learners_rejections(emb: Embedded) -> None:
    emb.save(header={"rejected": {"label_type": 3, "value_domain": 1}})
    with emb.client("read") as client:
        text = client.get("/metrics").text
    assert 'rivulet_learner_rejected_records{model="zipm",reason="label_type"} 3.0' in text
    assert 'rivulet_learner_rejected_records{model="zipm",reason="value_domain"} 1.0' in text


class StalledRedis:
    """A TCP server speaking just enough RESP2 for redis-py to connect (``+OK`` to the connection's set-up,
    ``+PONG`` to PING), that never answers ``SMEMBERS`` or ``SUBSCRIBE``: a Redis stalled on the registry.
    :meth:`seen` waits until a command has arrived (after :meth:`mark`)."""

    STALLED = (b"SMEMBERS", b"SUBSCRIBE")

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.commands: list[bytes] = []
        self.cond = threading.Condition()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?protocol=2"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while data := _recv(conn):
            buf += data
            while (parsed := _command(buf)) is not None:
                name, buf = parsed
                with self.cond:
                    self.commands.append(name)
                    self.cond.notify_all()
                if name in self.STALLED:
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")

    def mark(self) -> int:
        with self.cond:
            return len(self.commands)

    def seen(self, name: bytes, since: int, timeout: float = 60) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: name in self.commands[since:], timeout)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


def _command(buf: bytes) -> tuple[bytes, bytes] | None:
    """The first complete RESP command in ``buf`` (its upper-cased name) and the rest; None if incomplete."""
    if not buf.startswith(b"*") or b"\r\n" not in buf:
        return None
    head, rest = buf.split(b"\r\n", 1)
    args = []
    for _ in range(int(head[1:])):
        if b"\r\n" not in rest:
            return None
        size, rest = rest.split(b"\r\n", 1)
        n = int(size[1:])
        if len(rest) < n + 2:
            return None
        args.append(rest[:n])
        rest = rest[n + 2 :]
    return args[0].upper(), rest


def test_a_stalled_registry_does_not_block_the_event_loop(settings: Settings) -> None:
    """Before: a predict for a model not loaded asked the registry synchronously on the event loop: with Redis
    stalled, /healthz waited for the socket timeout. Now the lookup runs in a thread and /healthz answers
    while that request is still in flight (ordering, not timing: the predict cannot finish before Redis's
    socket timeout, and /healthz must)."""
    hole = StalledRedis()
    s = keyed(
        settings,
        redis_url=hole.url,
        redis_socket_timeout_s=6.0,
        redis_connect_timeout_s=6.0,
        serve_poll_s=3600.0,
        kafka_bootstrap="127.0.0.1:1",  # no Kafka either: scoring starts without it
        kafka_request_timeout_ms=1000,
    )
    done: list[str] = []
    try:
        with running(create_app(s)) as url:
            mark = hole.mark()

            def predict() -> None:
                r = httpx.post(
                    f"{url}/v1/models/ghost/predict",
                    json={"entity": "1"},
                    headers={"X-API-Key": KEYS["score"]},
                    timeout=60,
                )
                done.append(f"predict {r.status_code}")

            slow = threading.Thread(target=predict)
            slow.start()
            assert hole.seen(b"SMEMBERS", mark), "the predict never asked the registry"
            health = httpx.get(f"{url}/healthz", timeout=60)
            done.append(f"healthz {health.status_code}")
            # more unknown names while that lookup hangs: they wait for the same one (one thread, one command)
            more = [threading.Thread(target=predict) for _ in range(4)]
            for t in more:
                t.start()
            slow.join(60)
            for t in more:
                t.join(60)
            lookups = hole.commands[mark:].count(b"SMEMBERS")
    finally:
        hole.close()
    assert lookups == 1 and done[2:] == ["predict 503"] * 4, (lookups, done)
    done = done[:2]
    assert done == ["healthz 200", "predict 503"], done


def _bodies() -> st.SearchStrategy[Any]:
    """JSON values, and bodies shaped like the API's with any values inside (huge integers included)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**400), max_value=10**400)
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    )
    names = st.sampled_from(
        ["entity", "fields", "ts", "label", "event_id", "prediction_id", "schema_version", "x"]
    )
    record = st.dictionaries(
        names, values | st.dictionaries(st.text(max_size=8), scalars, max_size=3), max_size=6
    )
    return (
        values
        | record
        | st.fixed_dictionaries({"items": st.lists(record, max_size=3)})
        | st.fixed_dictionaries({"events": st.lists(record, max_size=3)})
        | st.fixed_dictionaries({"labels": st.lists(record, max_size=3)})
    )


def _raw_bodies() -> st.SearchStrategy[bytes]:
    """Raw JSON bodies ``json.dumps`` cannot write: an integer of more than 4 300 digits (Python's int-string
    limit) somewhere in a body shaped like the API's."""
    digits = st.integers(min_value=4_301, max_value=20_000).map(lambda n: "9" * n)
    huge = st.builds(lambda sign, d: sign + d, st.sampled_from(["", "-"]), digits)
    shapes = st.sampled_from(
        [
            '{"entity": "7", "fields": {"salary_mean_10m": %s}}',
            '{"items": [{"entity": "7", "fields": {"n": %s}}]}',
            '{"events": [{"entity": "a", "ts": 1700000000000, "fields": {"n": %s}}]}',
            '{"events": [{"entity": "a", "ts": %s}]}',
            '{"labels": [{"event_id": "e", "label": %s}]}',
            '{"x": %s}',
            "[%s]",
            "%s",
        ]
    )
    return st.builds(lambda shape, n: (shape % n).encode(), shapes, huge)


def test_integers_past_the_int_string_limit_are_422_on_every_body_route(emb: Embedded) -> None:
    """Before: a JSON integer of more than 4 300 digits made ``json.loads`` raise a plain ValueError (not a
    JSONDecodeError): ``/v1/events`` and ``/v1/labels`` answered 500, predict FastAPI's generic 400."""
    headers = {"content-type": "application/json"}
    with emb.client() as client:
        for digits in (5_000, 100_000):
            n = "1" * digits
            cases = [
                (
                    "score",
                    "/v1/models/zipm/predict",
                    '{"entity": "7", "fields": {"salary_mean_10m": %s}}',
                    "fields",
                ),
                ("score", "/v1/models/zipm/predict", '{"entity": "7", "x": %s}', "x"),
                (
                    "score",
                    "/v1/models/zipm/predict/batch",
                    '{"items": [{"entity": "7", "x": -%s}]}',
                    "items.0",
                ),
                ("ingest", "/v1/events", '{"x": %s}', "x"),
                ("ingest", "/v1/events", '{"events": [{"entity": "a", "ts": 1, "fields": {"n": %s}}]}', "n"),
                ("ingest", "/v1/labels", '{"x": %s}', "x"),
                ("ingest", "/v1/labels", '{"labels": [{"event_id": "e", "label": %s}]}', "labels.0"),
            ]
            for scope, path, shape, named in cases:
                r = client.post(
                    path, content=(shape % n).encode(), headers={**headers, "X-API-Key": KEYS[scope]}
                )
                assert r.status_code == 422, (digits, path, shape, r.status_code, r.text[:300])
                assert r.json()["error"] == "invalid_request" and named in r.json()["detail"], r.text[:300]
    assert emb.log.end(emb.settings.topics.events) == 0


def test_arbitrary_json_bodies_never_get_a_5xx(emb: Embedded) -> None:
    """Any JSON body at every route, with the route's key: a 2xx or a 4xx, never a 5xx (raw bodies with
    integers ``json.dumps`` cannot write included)."""
    routes = [
        (scope, method, path) for scope, rs in ROUTES.items() for method, path, _ in rs if method == "POST"
    ]
    with emb.client() as client:

        @hypothesis.settings(max_examples=300, deadline=None, database=None)
        @hypothesis.given(route=st.sampled_from(routes), body=_bodies() | _raw_bodies())
        def check(route: tuple[str, str, str], body: Any) -> None:
            scope, method, path = route
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = client.request(
                method,
                path,
                content=raw,
                headers={"content-type": "application/json", "X-API-Key": KEYS[scope]},
            )
            assert r.status_code < 500, (path, raw[:300], r.text)
            assert r.json()["error"] if r.status_code >= 400 else True

        check()
