"""The scoring API attacked as a hostile caller would (issue 11, second pass): what fell and is fixed, each
test failing on the code before its fix (see each docstring), and guards for what held (path tricks, body
framing, metric labels), so it keeps holding.

All run on the embedded services (no Kafka, no Redis); the raw-socket ones on a real uvicorn on 127.0.0.1
(the parser a deployment runs: httptools)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.embedded import EmbeddedServices, LogProducer
from streaming.settings import Settings
from tests.serving.running import running
from tests.support.api_env import KEYS, Embedded, keyed

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


@pytest.fixture
def emb(settings: Settings) -> Embedded:
    e = Embedded(keyed(settings, max_request_bytes=4096))
    e.save()
    return e


def raw(url: str, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection to the server at ``url``; the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_an_events_own_label_must_fit_a_served_model(emb: Embedded) -> None:
    """Before: ``/v1/labels`` checked labels against the served models' tasks, but an event carrying its own
    ``label`` went through ``/v1/events`` unchecked: ``"banana"`` or ``1e300`` for a binary model was 202
    and published as training data."""
    topic = emb.settings.topics.events
    good = {"entity": "a", "ts": 1_700_000_000_000, "fields": {"x": 1}, "label": True}
    with emb.client("ingest") as client:
        for bad in ("banana", 1e300, 2, 0.5):
            r = client.post("/v1/events", json={"events": [good, {**good, "label": bad}]})
            assert r.status_code == 400 and r.json()["error"] == "invalid_label", (bad, r.text)
            assert r.json()["detail"].startswith("events[1].label:") and "binary" in r.json()["detail"]
        assert emb.log.end(topic) == 0  # nothing of a refused request was published
        for label in (True, 0, 1.0, None):
            event = {**good, "label": label} if label is not None else {**good, "label": None}
            assert client.post("/v1/events", json={"events": [event]}).status_code == 202, label
        assert emb.log.end(topic) == 4


def test_a_lone_surrogate_is_refused_not_answered_and_lost(emb: Embedded) -> None:
    """Before: a lone surrogate (``"\\ud800"``, valid JSON, not valid Unicode) in a predict field name or
    value was answered 200, and the prediction was then silently never published (orjson cannot write it),
    so its label could never join. Now the body is parsed by orjson: 422, nothing answered or published.
    NaN literals and nesting past 1024 are 422 too (the stdlib parser gave NaN a pass to the schema, and
    a deep nesting a 400 "error parsing the body")."""
    bodies = [
        b'{"entity": "7", "fields": {"\\ud800": 1}}',
        b'{"entity": "7", "fields": {"x": "\\udc00"}}',
        b'{"entity": "\\ud800"}',
        b'{"entity": "7", "fields": {"x": NaN}}',
        b'{"entity": "7", "fields": {"x": "\\ud800", "n": 1234567890123456789}}',  # the stdlib's path too
        b'{"entity": "7", "fields": {"x": ' + b"[" * 1500 + b"]" * 1500 + b"}}",
    ]
    with emb.client("score") as client:
        for body in bodies:
            r = client.post("/v1/models/zipm/predict", content=body, headers=JSON)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", (body[:60], r.text)
        good = '{"entity": "7", "fields": {"é": "ü😀"}}'.encode()
        ok = client.post("/v1/models/zipm/predict", content=good, headers=JSON)
        assert ok.status_code == 200, ok.text
        digits = client.post("/v1/models/zipm/predict", json={"entity": "1" * 40, "fields": {"n": 2**63 - 1}})
        assert digits.status_code == 200 and digits.json()["entity"] == "1" * 40, digits.text
    with emb.client("ingest") as client:
        r = client.post(
            "/v1/labels", content=b'{"labels": [{"prediction_id": "\\ud800", "label": true}]}', headers=JSON
        )
        assert r.status_code == 422, r.text
    assert emb.log.end(emb.settings.topics.predictions) == 2  # the good ones only
    assert emb.log.end(emb.settings.topics.labels) == 0


def test_two_host_headers_are_refused(emb: Embedded) -> None:
    """Before: ``Host: localhost`` then ``Host: evil.example`` was answered (Starlette checks the first one,
    a proxy may route on the last); RFC 9112 requires a 400."""
    with running(emb.app()) as url:
        for hosts in ([b"localhost", b"evil.example"], [b"evil.example", b"localhost"], [b"localhost"] * 2):
            head = b"".join(b"Host: %s\r\n" % h for h in hosts)
            answer = raw(url, b"GET /healthz HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n")
            assert status(answer) == 400 and answer.endswith(b"Invalid host header"), (hosts, answer)
        ok = raw(url, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert status(ok) == 200


def test_host_spellings_that_must_not_pass_on_a_real_server(emb: Embedded) -> None:
    """Guard: userinfo, a trailing dot, a missing Host (HTTP/1.0 and 1.1), a forwarded host or a numeric
    spelling of loopback is no way around the trusted hosts; case and an IPv6 loopback are the same host."""
    refused = [
        b"Host: localhost@evil.example\r\n",
        b"Host: evil.example@localhost\r\n",
        b"Host: localhost.\r\n",
        b"Host: 127.1\r\n",
        b"Host: 0x7f000001\r\n",
        b"Host: evil.example\r\nX-Forwarded-Host: localhost\r\nForwarded: host=localhost\r\n",
        b"",
    ]
    with running(emb.app()) as url:
        for version in (b"1.0", b"1.1"):
            for head in refused:
                answer = raw(
                    url, b"GET /healthz HTTP/" + version + b"\r\n" + head + b"Connection: close\r\n\r\n"
                )
                assert status(answer) == 400 and answer.endswith(b"Invalid host header"), (
                    version,
                    head,
                    answer,
                )
        for host in (b"LOCALHOST:8000", b"[::1]:8000", b"127.0.0.1"):
            answer = raw(url, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            assert status(answer) == 200, host


def test_no_route_redirects(emb: Embedded) -> None:
    """Before: ``/v1/models/``, ``/healthz/`` or ``/v1/models/zipm/predict/`` got a 307 before any key check,
    to an absolute ``http://`` URL built from the Host header: a client behind TLS termination that
    follows it sends its key (and body) in clear text. Now a 404 like any unknown path."""
    paths = [
        ("GET", "/v1/models/", "read"),
        ("GET", "/healthz/", None),
        ("GET", "/dashboard/", None),
        ("POST", "/v1/models/zipm/predict/", "score"),
    ]
    with emb.client() as client:
        for method, path, key in paths:
            for headers in ({}, {"X-API-Key": KEYS[key]} if key else {}):  # TestClient does not follow
                r = client.request(
                    method, path, headers=headers, json={"entity": "7"}, follow_redirects=False
                )
                assert r.status_code == 404 and "location" not in r.headers, (path, r.status_code)


def test_assets_serve_the_pages_scripts_and_styles_only(emb: Embedded) -> None:
    """Before: ``/assets/__init__.py`` (and any file of the package directory: licences, ``__pycache__``)
    was served anonymously."""
    with emb.client() as client:
        for path in ("/assets/__init__.py", "/assets/uplot/LICENSE", "/assets/uplot/SOURCE.md"):
            assert client.get(path).status_code == 404, path
        for path in ("/assets/dashboard.js", "/assets/charts.js", "/assets/uplot/uPlot.min.css"):
            assert client.get(path).status_code == 200, path


# Guards: attacks that held. Each asserts the answer a correct API gives.

PATH_TRICKS = [
    "//v1/models",
    "/v1//models",
    "/v1/models/..",
    "/v1/models/%2e%2e",
    "/v1/models/a%2Fb",
    "/v1/%6dodels",
    "/v1/models/%7a%69pm",
    "/V1/MODELS",
    "/v1/models/zipm%00",
    "/v1/models/" + "a" * 10_000,
    "/metrics%2f",
    "/openapi.json/",
    "/docs/oauth2-redirect",
    "/redoc",
    "/assets/../serving/app.py",
    "/assets/%2e%2e/%2e%2e/pyproject.toml",
    "/assets/..%2f..%2fpyproject.toml",
]


def test_path_tricks_never_reach_data_without_a_key(emb: Embedded) -> None:
    """Anonymous callers get 401 or 404 on every spelling of a keyed route, with any method."""
    with emb.client() as client:
        for path in PATH_TRICKS:
            for method in ("GET", "HEAD", "OPTIONS", "POST", "TRACE"):
                r = client.request(method, path, follow_redirects=False)
                assert r.status_code in (401, 404, 405), (method, path, r.status_code)
                assert b"zipm" not in r.content or b"model_not_found" in r.content, (method, path, r.text)


def test_body_framing_attacks_on_a_real_server(emb: Embedded) -> None:
    """h11-level tricks on uvicorn: conflicting lengths are refused by the parser, a chunked body past the
    limit is a 413 however it is cut, a gzip body is not inflated (it is JSON or a 422), a lying short
    Content-Length reads only what it declares."""
    key = KEYS["score"].encode()
    head = b"POST /v1/models/zipm/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    head += b"X-API-Key: " + key + b"\r\n"
    big = b'{"entity": "7", "fields": {"x": "' + b"y" * 6000 + b'"}}'
    small = b'{"entity": "7"}'
    with running(emb.app()) as url:
        many = b"".join(b"1\r\n" + bytes([c]) + b"\r\n" for c in big) + b"0\r\n\r\n"
        chunked = raw(url, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + many)
        assert status(chunked) == 413 and b'"too_large"' in chunked
        two_lengths = b"Content-Length: 15\r\nContent-Length: 9999\r\nConnection: close\r\n\r\n"
        assert status(raw(url, head + two_lengths + small)) == 400
        both = b"Content-Length: 15\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        assert status(raw(url, head + both + b"f\r\n" + small + b"\r\n0\r\n\r\n")) == 400
        declared = raw(url, head + b"Content-Length: 999999\r\nConnection: close\r\n\r\n")
        assert status(declared) == 413
        lying = raw(url, head + b"Content-Length: 15\r\nConnection: close\r\n\r\n" + small + b"trailing junk")
        assert status(lying) == 200 and b'"entity":"7"' in lying
        import gzip

        packed = gzip.compress(small)
        gz = b"Content-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(packed)
        assert status(raw(url, head + gz + packed)) == 422


def test_caller_chosen_names_never_become_metric_labels(emb: Embedded) -> None:
    """Unknown model names, paths and keys a caller sends leave /metrics' label values unchanged (a
    Prometheus series per caller-chosen name would let a flood exhaust the scraper)."""
    marker = uuid.uuid4().hex
    with emb.client("score") as client:
        for i in range(50):
            client.post(f"/v1/models/{marker}{i}/predict", json={"entity": "7"})
            client.get(f"/{marker}{i}")
            client.post("/v1/models/zipm/predict", json={"entity": marker})
    with emb.client("read") as client:
        text = client.get("/metrics").text
    assert marker not in text
    assert 'route="unmatched"' in text and 'route="/v1/models/{name}/predict"' in text


def test_a_request_field_never_stands_in_for_a_stored_aggregate(settings: Settings) -> None:
    """Before: for an entity without a stored vector, a request field named like one of the view's
    aggregates (``count_lifetime: 999999``) became that aggregate in the scored vector, and was published on
    the predictions topic as if the pipeline had computed it (a label for that prediction then trained the
    model on a fabricated aggregate). Aggregates come from the online store only; the request's own fields
    and what derives from them still count."""
    emb = Embedded(keyed(settings))
    emb.save("allm", header={"view": "all"})  # the view that takes request fields
    fields = {"count_lifetime": 999_999, "loan_mean_lifetime": 5.0, "salary": 52_000.0}
    with emb.client("score") as client:
        r = client.post("/v1/models/allm/predict", json={"entity": "new", "fields": fields})
        assert r.status_code == 200 and r.json()["features_found"] is False, r.text
    [(_, _, value, _)] = emb.log.read(emb.settings.topics.predictions, 0, 10)
    features = orjson.loads(value)["features"]
    assert "count_lifetime" not in features and "loan_mean_lifetime" not in features, features
    assert features["salary"] == 52_000.0 and features["sal_k"] == 52.0  # own and derived fields stay


class StalledProducer:
    """Kafka whose metadata never comes: ``send`` waits forever (aiokafka waits up to its request timeout,
    15 s by default, on every send to a topic that does not exist)."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.calls += 1
        await asyncio.Event().wait()


def test_a_stalled_kafka_never_holds_a_prediction(emb: Embedded) -> None:
    """Before: each prediction awaited ``producer.send`` on the response path, which waits for the topic's
    metadata: with the predictions topic missing, every predict took the Kafka request timeout (15 s) and a
    batch of 17 took 17 of them (found scoring on Redis Cluster with no predictions topic). Now the sends
    run in the app's outbox: answered at once, each prediction held there for the producer."""
    services = EmbeddedServices(emb.settings, emb.stack)
    stalled = StalledProducer()
    services.producer = stalled  # type: ignore[assignment]
    headers = {"X-API-Key": KEYS["score"], "host": "localhost"}
    app = create_app(emb.settings, services)
    with running(app) as url, httpx.Client(headers=headers, timeout=10) as client:
        for _ in range(3):
            r = client.post(f"{url}/v1/models/zipm/predict", json={"entity": "7"})
            assert r.status_code == 200, r.text
        batch = client.post(f"{url}/v1/models/zipm/predict/batch", json={"items": [{"entity": "7"}] * 20})
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 20
        assert client.get(f"{url}/healthz").status_code == 200
        held = app.state.outbox.held
    # every prediction waits in the outbox (one send stalled behind the topic's metadata), none is lost
    assert held == 23 and stalled.calls >= 1


class SlowProducer:
    """The embedded log's producer, which takes a while (a metadata fetch) before each record is queued."""

    def __init__(self, log: Any) -> None:
        self.inner = LogProducer(log)

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        for _ in range(10):
            await asyncio.sleep(0.02)
        return await self.inner.send(topic, value, key=key)


def test_predictions_in_the_outbox_at_shutdown_are_published_before_the_producer_stops(emb: Embedded) -> None:
    """Before: the sends still pending in the outbox when the app stopped were dropped with their tasks (the
    producer stopped under them): predictions answered just before a shutdown or a deploy never reached the
    predictions topic. Now the lifespan drains the outbox (bounded) before the services stop."""
    topic = emb.settings.topics.predictions
    start = emb.log.end(topic)
    services = EmbeddedServices(emb.settings, emb.stack)
    services.producer = SlowProducer(emb.log)  # type: ignore[assignment]
    with TestClient(create_app(emb.settings, services), base_url="http://localhost") as client:
        client.headers["X-API-Key"] = KEYS["score"]
        ids = [client.post("/v1/models/zipm/predict", json={"entity": "7"}).json()["prediction_id"]]
        batch = client.post("/v1/models/zipm/predict/batch", json={"items": [{"entity": "7"}] * 5})
        ids += [p["prediction_id"] for p in batch.json()["predictions"]]
        assert emb.log.end(topic) == start  # answered, not yet published
    published = [orjson.loads(v)["prediction_id"] for _, _, v, _ in emb.log.read(topic, start)]
    assert sorted(published) == sorted(ids) and len(ids) == 6


def test_the_outbox_drain_is_bounded_and_counts_what_it_gives_up() -> None:
    """A producer that never answers cannot hold the shutdown: the drain gives up after its timeout, and
    the sends it cancels are counted unpublished for their model."""
    from serving.metrics import UNPUBLISHED
    from serving.outbox import Outbox

    async def run() -> tuple[int, int]:
        outbox = Outbox()
        stalled = StalledProducer()
        for _ in range(3):
            outbox.send(stalled, "t", b"v", b"k", "drain-model")
        await asyncio.sleep(0)
        left = await outbox.drain(0.05)
        return left, outbox.held

    before = UNPUBLISHED.labels("drain-model")._value.get()
    assert asyncio.run(run()) == (3, 0)
    assert UNPUBLISHED.labels("drain-model")._value.get() == before + 3


class NoMetadataProducer:
    """aiokafka when the topic's metadata never comes (the topic missing, no auto-creation): ``send`` itself
    raises ``KafkaTimeoutError`` after its request timeout."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        from aiokafka.errors import KafkaTimeoutError

        raise KafkaTimeoutError()


def test_ingest_without_the_topics_metadata_is_a_503_not_a_500(emb: Embedded) -> None:
    """Before: ``producer.send`` raising (not its future) escaped the ingest routes' Kafka handling: 500
    ``internal`` for events and labels when the topic was missing. Now 503 ``kafka_unavailable``: nothing was
    accepted, try again."""
    services = EmbeddedServices(emb.settings, emb.stack)
    services.producer = NoMetadataProducer()  # type: ignore[assignment]
    event = {"entity": "a", "ts": 1_700_000_000_000, "fields": {"x": 1}}
    with TestClient(create_app(emb.settings, services), base_url="http://localhost") as client:
        client.headers["X-API-Key"] = KEYS["ingest"]
        for path, body in (
            ("/v1/events", {"events": [event]}),
            ("/v1/labels", {"labels": [{"event_id": "e1", "label": True}]}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 503 and r.json()["error"] == "kafka_unavailable", (path, r.text)


class FailingAtProducer:
    """The embedded log's producer whose ``fail_at``-th send (1-based) raises, or, with ``future=True``,
    whose ``fail_at``-th record is written but its future fails (Kafka wrote it, the ack was lost)."""

    def __init__(self, log: Any, fail_at: int, future: bool = False) -> None:
        self.inner = LogProducer(log)
        self.fail_at = fail_at
        self.future = future
        self.calls = 0

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        from aiokafka.errors import KafkaTimeoutError

        self.calls += 1
        if self.calls == self.fail_at and not self.future:
            raise KafkaTimeoutError()
        sent = await self.inner.send(topic, value, key=key)
        if self.calls == self.fail_at:
            lost: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            lost.set_exception(KafkaTimeoutError())
            return lost
        return sent


def test_a_503_names_the_ids_kafka_may_have_and_asks_for_a_retry_with_them(emb: Embedded) -> None:
    """Before: a Kafka failure mid-request answered 503 ``kafka_unavailable`` "nothing was accepted" though
    the records sent before it were published (the routes send one by one). Now the 503 names the ids that
    may have been accepted (exactly those on the log when a send failed; all when an ack was lost) and asks
    for a retry with the same ids; the error code is unchanged."""
    topic = emb.settings.topics.events
    events = [
        {"entity": "a", "ts": 1_700_000_000_000, "event_id": f"e{i}", "fields": {"x": i}} for i in range(5)
    ]
    for producer, maybe in (
        (FailingAtProducer(emb.log, fail_at=3), ["e0", "e1"]),
        (FailingAtProducer(emb.log, fail_at=2, future=True), [f"e{i}" for i in range(5)]),
    ):
        services = EmbeddedServices(emb.settings, emb.stack)
        services.producer = producer  # type: ignore[assignment]
        start = emb.log.end(topic)
        with TestClient(create_app(emb.settings, services), base_url="http://localhost") as client:
            client.headers["X-API-Key"] = KEYS["ingest"]
            r = client.post("/v1/events", json={"events": events})
        assert r.status_code == 503 and r.json()["error"] == "kafka_unavailable", r.text
        detail = r.json()["detail"]
        assert "nothing was accepted" not in detail and str(maybe) in detail, detail
        assert "same ids" in detail and "de-duplicates by event id" in detail, detail
        on_log = [orjson.loads(v)["event_id"] for _, _, v, _ in emb.log.read(topic, start)]
        assert set(on_log) <= set(maybe) and (len(maybe) == 5 or on_log == maybe), on_log
    labels = {"labels": [{"event_id": f"e{i}", "label": True} for i in range(3)]}
    services = EmbeddedServices(emb.settings, emb.stack)
    services.producer = FailingAtProducer(emb.log, fail_at=2)  # type: ignore[assignment]
    with TestClient(create_app(emb.settings, services), base_url="http://localhost") as client:
        r = client.post("/v1/labels", json=labels, headers={"X-API-Key": KEYS["ingest"]})
    assert (
        r.status_code == 503 and "the first 1 of 3 may have been accepted, ids ['e0']" in r.json()["detail"]
    )
    services.producer = FailingAtProducer(emb.log, fail_at=1)  # type: ignore[assignment]
    with TestClient(create_app(emb.settings, services), base_url="http://localhost") as client:
        r = client.post("/v1/labels", json=labels, headers={"X-API-Key": KEYS["ingest"]})
    assert r.status_code == 503 and "nothing was accepted" in r.json()["detail"], r.text


def test_a_cross_site_form_or_blob_post_cannot_write_training_data(settings: Settings) -> None:
    """Guard: with no key configured (the loopback default), a web page can still make a browser POST to
    127.0.0.1 without a CORS preflight, but only with a text/plain, form or missing Content-Type. The API
    takes JSON only under ``application/json`` (which needs a preflight, and no CORS is allowed), so such a
    request publishes nothing."""
    emb = Embedded(
        keyed(settings, scoring_api_keys=[], ingest_api_keys=[], read_api_keys=[], admin_api_keys=[])
    )
    body = b'{"events": [{"entity": "victim", "ts": 1700000000000, "fields": {"x": 1}}]}'
    cross = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    with running(emb.app()) as url:
        port = url.rsplit(":", 1)[1].encode()
        for content_type in (b"", b"text/plain;charset=UTF-8", b"application/x-www-form-urlencoded"):
            head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n"
            head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in cross.items())
            head += b"Content-Type: " + content_type + b"\r\n" if content_type else b""
            answer = raw(url, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            assert status(answer) == 422, (content_type, answer)
        preflight = (
            b"OPTIONS /v1/events HTTP/1.1\r\nHost: 127.0.0.1:"
            + port
            + b"\r\nOrigin: https://evil.example\r\n"
        )
        preflight += b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        answer = raw(url, preflight)
        assert status(answer) == 405 and b"access-control-allow-origin" not in answer.lower()
    assert emb.log.end(emb.settings.topics.events) == 0


def test_an_event_from_the_far_future_is_refused_at_ingest(emb: Embedded) -> None:
    """Before: an event stamped 9999-12-31 was 202 and then dead-lettered ``future`` by the feature worker
    (one such event moved its entity's watermark there and made every later event of that entity late); the
    caller never knew. Now a 400 naming the item, beyond ``features_max_ahead_ms`` of now; nothing published.
    """
    import time

    now = int(time.time() * 1000)
    day = 86_400_000
    assert emb.settings.features_max_ahead_ms == day
    good = {"entity": "a", "ts": now, "fields": {"x": 1}}
    with emb.client("ingest") as client:
        for ts in (253_402_300_799_999, now + 2 * day, "9999-12-31T00:00:00+00:00"):
            r = client.post("/v1/events", json={"events": [good, {**good, "ts": ts}]})
            assert r.status_code == 400 and r.json()["detail"].startswith("events[1].ts:"), (ts, r.text)
        assert emb.log.end(emb.settings.topics.events) == 0
        ok = [good, {**good, "ts": now + day // 2}, {**good, "ts": 0}]  # ahead within the bound; the past
        assert client.post("/v1/events", json={"events": ok}).status_code == 202
        assert emb.log.end(emb.settings.topics.events) == 3


def test_ingest_validation_runs_off_the_event_loop(emb: Embedded) -> None:
    """Before: a body of 10 000 events or labels was validated on the event loop (about 0.5 s of pydantic and
    per-item checks on this machine), during which the replica answered nothing, scoring included. Now
    parsing, validation and the per-item checks run in a thread. Shown without timing: a served model whose
    classes are read only when a gate opens holds the labels' checks; ``/healthz`` must answer meanwhile
    (on the event loop that check blocked it: the health request timed out)."""
    import threading

    from serving.models import LoadedModel
    from tests.support.api_env import trained

    reached, gate = threading.Event(), threading.Event()

    from streaming.learning.header import CheckpointHeader

    class GatedHeader:
        """A typed header whose ``classes`` (read by the label check) blocks until the gate opens."""

        def __init__(self, view: str) -> None:
            self.real = CheckpointHeader.of({"view": view})

        @property
        def classes(self) -> Any:
            reached.set()
            gate.wait(60)
            return self.real.classes

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    services = EmbeddedServices(emb.settings, emb.stack)
    app = create_app(emb.settings, services)
    answers: dict[str, Any] = {}
    headers = {"host": "localhost"}
    with running(app) as url:
        services.models.models["gated"] = LoadedModel(
            "gated",
            1,
            trained(),
            GatedHeader(view="zip"),  # type: ignore[arg-type]
            None,
        )
        labels = {"labels": [{"event_id": f"e{i}", "label": True} for i in range(100)]}

        def post() -> None:
            answers["labels"] = httpx.post(
                f"{url}/v1/labels", json=labels, headers={**headers, "X-API-Key": KEYS["ingest"]}, timeout=60
            )

        poster = threading.Thread(target=post)
        poster.start()
        try:
            assert reached.wait(30), "the labels never reached the check"
            health = httpx.get(f"{url}/healthz", headers=headers, timeout=10)
            assert health.status_code == 200
        finally:
            gate.set()
            poster.join(60)
    assert answers["labels"].status_code == 202, answers["labels"].text
    assert emb.log.end(emb.settings.topics.labels) == 100


def test_the_outbox_holds_at_most_its_limit_and_counts_the_rest() -> None:
    """Kafka stalled: the outbox holds ``limit`` predictions (queued, or handed to a send that never
    returns); each one beyond is counted unpublished at once, and the drain gives up the ones it held."""
    from serving.metrics import UNPUBLISHED
    from serving.outbox import Outbox

    async def run() -> tuple[int, float, int, int]:
        outbox = Outbox(limit=5, linger_s=0)
        stalled = StalledProducer()
        before = UNPUBLISHED.labels("limit-model")._value.get()
        for _ in range(8):
            outbox.send(stalled, "t", b"v", b"k", "limit-model")
        await asyncio.sleep(0.01)
        counted = UNPUBLISHED.labels("limit-model")._value.get() - before
        return outbox.held, counted, await outbox.drain(0.05), stalled.calls

    held, counted, given_up, calls = asyncio.run(run())
    assert (held, counted, given_up, calls) == (5, 3.0, 5, 1)
