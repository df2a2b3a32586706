"""The predict route's hot path (issue 16): :class:`serving.routes.scoring.FastPredict` answers a well-formed
request itself and anything else exactly as the route does; a prediction that is not a finite number is a
400, not a 500. On the embedded services (no Kafka, no Redis)."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from river import metrics

from serving.metrics import PREDICTIONS
from serving.routes.scoring import PREDICT, FastPredict, router
from streaming.learning.core import LearnerCore
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings
from tests.serving.running import running
from tests.support.api_env import KEYS, Embedded, keyed
from tests.support.model_defs import Unbounded

pytestmark = pytest.mark.unit

JSON = {"content-type": "application/json"}
SCORE = {"X-API-Key": KEYS["score"]}


@pytest.fixture
def emb(settings: Settings) -> Embedded:
    e = Embedded(keyed(settings, max_request_bytes=4096))
    e.save()
    return e


def without_fast_path(app: FastAPI) -> FastAPI:
    """The same app with the route alone answering predict requests (the code before issue 16)."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPredict]
    return app


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


# (headers, body) of requests the route must keep answering as it did: bad keys, bodies and content types,
# unknown models, values outside the domain, and the well-formed ones the fast path takes; a tuple is a body
# sent chunked (no content-length)
CASES: list[tuple[dict[str, str], Any]] = [
    ({**JSON, **SCORE}, b'{"entity": "7"}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"salary_mean_10m": 1.5, "x": "a", "b": true}}'),
    ({"content-type": "application/json; charset=utf-8", **SCORE}, b'{"entity": "nobody"}'),
    (JSON, b'{"entity": "7"}'),  # no key: 401
    ({**JSON, "X-API-Key": KEYS["read"]}, b'{"entity": "7"}'),  # another scope: 403
    ({**JSON, "X-API-Key": "nope"}, b'{"entity": "7"}'),
    (SCORE, b'{"entity": "7"}'),  # no content type: FastAPI parses it as JSON anyway
    ({"content-type": "text/plain", **SCORE}, b'{"entity": "7"}'),
    ({"content-type": "application/vnd.rivulet+json", **SCORE}, b'{"entity": "7"}'),
    ({**JSON, **SCORE}, b""),
    ({**JSON, **SCORE}, b"{"),
    ({**JSON, **SCORE}, b"[]"),
    ({**JSON, **SCORE}, b"null"),
    ({**JSON, **SCORE}, b'{"entity": ""}'),
    ({**JSON, **SCORE}, b'{"entity": 7}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "extra": 1}'),
    ({**JSON, **SCORE}, b'{"entity": "\\ud800"}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": 123456789012345678901234}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": NaN}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": 1e400}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": [1]}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"salary_mean_10m": 1e300}}'),
    ({**JSON, **SCORE}, b'{"entity": "' + b"e" * 5000 + b'"}'),  # over the body limit
    ({**JSON, **SCORE}, (b'{"entity": "7", ', b'"fields": {}}')),
    ({**JSON, **SCORE}, (b'{"entity": "', b"e" * 5000, b'"}')),  # chunked, over the limit
]


def answer(client: TestClient, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
    r = client.post(path, headers=headers, content=chunks(*body) if isinstance(body, tuple) else body)
    try:
        content = r.json()
    except ValueError:
        return r.status_code, r.text
    if isinstance(content, dict):
        content.pop("prediction_id", None)  # a new id for each prediction
        if isinstance(content.get("feature_age_ms"), int):
            content["feature_age_ms"] = "an age"  # the clock moves between the two calls
    return r.status_code, (content, r.headers["content-type"], r.headers.get("x-content-type-options"))


@pytest.mark.parametrize("path", [PREDICT.format(name="zipm"), PREDICT.format(name="nope")])
def test_every_request_is_answered_as_the_route_answers_it(emb: Embedded, path: str) -> None:
    """Each case, to the app with the fast path and to the same app without it: the same status and body
    (the ids and the feature's age aside), never a 500."""
    base = "http://localhost"
    with (
        TestClient(emb.app(), base_url=base) as fast,
        TestClient(without_fast_path(emb.app()), base_url=base) as route,
    ):
        for headers, body in CASES:
            got, want = answer(fast, path, headers, body), answer(route, path, headers, body)
            assert got == want, (headers, body[:100], got, want)
            assert got[0] < 500, got


def test_a_well_formed_request_never_reaches_fastapi(emb: Embedded) -> None:
    """With the scoring routes taken out of the router, the fast path still scores a well-formed request
    (and publishes it), while anything it hands on meets the router, which no longer knows the path."""
    app = emb.app()
    app.router.routes = [r for r in app.router.routes if getattr(r, "original_router", None) is not router]
    topic = emb.settings.topics.predictions
    before = PREDICTIONS.labels("zipm", "1")._value.get()
    with TestClient(app, base_url="http://localhost", headers=SCORE) as client:
        r = client.post("/v1/models/zipm/predict", json={"entity": "7", "fields": {"x": 1}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == [
            "prediction_id",
            "model",
            "version",
            "entity",
            "prediction",
            "probabilities",
            "features_found",
            "feature_age_ms",
            "fallback",
        ]
        assert body["model"] == "zipm" and body["version"] == 1 and body["entity"] == "7", body
        assert set(body["probabilities"]) == {"true", "false"}, body
        assert math.isclose(sum(body["probabilities"].values()), 1.0), body
        assert r.headers["x-content-type-options"] == "nosniff"
        assert client.post("/v1/models/zipm/predict", json={"entity": 7}).status_code == 404  # handed on
        assert client.post("/v1/models/zipm/predict", content=b"{").status_code == 404
    assert PREDICTIONS.labels("zipm", "1")._value.get() == before + 1
    published = [orjson.loads(v) for _, _, v, _ in emb.log.read(topic, 0)]
    assert [p["prediction_id"] for p in published] == [body["prediction_id"]], published


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_prediction_that_is_not_a_finite_number_is_unscorable(emb: Embedded, value: float) -> None:
    """Before: a regressor predicting an infinity or NaN (a diverged model) failed the response's validation:
    a 500 for the request, and for a batch holding it. Now a 400 naming the model, nothing published."""
    spec = ModelSpec("infm", "regression", "zip", lambda: Unbounded(value), metrics=(metrics.MAE,))
    emb.save("infm", state=LearnerCore([spec]).models["infm"])
    for app in (emb.app(), without_fast_path(emb.app())):
        with TestClient(app, base_url="http://localhost", headers=SCORE) as client:
            r = client.post("/v1/models/infm/predict", json={"entity": "7"})
            assert r.status_code == 400 and r.json()["error"] == "unscorable", r.text
            assert "infm" in r.json()["detail"] and r.json()["detail"].startswith("body:"), r.text
            r = client.post("/v1/models/infm/predict/batch", json={"items": [{"entity": "7"}]})
            assert r.status_code == 400 and r.json()["detail"].startswith("items[0]:"), r.text
    assert emb.log.read(emb.settings.topics.predictions, 0) == []


def test_fastapi_native_telemetry_is_off(emb: Embedded) -> None:
    """FastAPI's OpenTelemetry checks for a provider on every request (environment lookups, 3% of the CPU of
    a request): Rivulet exports Prometheus metrics and turns it off."""
    app = emb.app()
    assert not app._native_telemetry.enabled()
    assert app._telemetry["tracing"] is False and app._telemetry["metrics"] is False


SCORE_KEY, READ_KEY = KEYS["score"], KEYS["read"]
CT = "content-type"
# hostile variants (issue 16's review): repeated headers (a list of pairs), content types, bodies that are
# JSON but not a request, non-finite literals, duplicate keys, deep nesting, entities of other types
HOSTILE: list[tuple[Any, Any]] = [
    ([(CT, "text/plain"), (CT, "application/json"), ("x-api-key", SCORE_KEY)], b'{"entity": "7"}'),
    ([(CT, "application/json"), (CT, "text/plain"), ("x-api-key", SCORE_KEY)], b'{"entity": "7"}'),
    ([(CT, "application/json"), ("x-api-key", READ_KEY), ("x-api-key", SCORE_KEY)], b'{"entity": "7"}'),
    ([(CT, "application/json"), ("x-api-key", SCORE_KEY), ("x-api-key", READ_KEY)], b'{"entity": "7"}'),
    ([(CT, "application/json"), ("authorization", f"Bearer {READ_KEY}"), ("x-api-key", SCORE_KEY)], b"{}"),
    ([(CT, "application/json"), ("authorization", f"bEaReR {SCORE_KEY}")], b'{"entity": "7"}'),
    ([(CT, "application/json"), ("authorization", f"Basic {SCORE_KEY}")], b'{"entity": "7"}'),
    ({CT: "application/json; charset=latin-1", **SCORE}, b'{"entity": "\xe9"}'),
    ({CT: "application/json; charset=latin-1", **SCORE}, '{"entity": "é"}'.encode()),
    ({CT: "APPLICATION/JSON ; x=y", **SCORE}, b'{"entity": "7"}'),
    ({CT: "application/json, text/plain", **SCORE}, b'{"entity": "7"}'),
    ({CT: "application/problem+json", **SCORE}, b'{"entity": "7"}'),
    ({**JSON, **SCORE}, b'"7"'),
    ({**JSON, **SCORE}, b"7"),
    ({**JSON, **SCORE}, b"true"),
    ({**JSON, **SCORE}, b'{"entity": true}'),
    ({**JSON, **SCORE}, b'{"entity": null}'),
    ({**JSON, **SCORE}, b'{"entity": ["7"]}'),
    ({**JSON, **SCORE}, b'{"entity": "' + b"e" * 1025 + b'"}'),
    ({**JSON, **SCORE}, b'{"entity": "' + b"e" * 1024 + b'"}'),
    ({**JSON, **SCORE}, b'{"entity": "{x}\\u00e9}{", "fields": {}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "entity": "8"}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": Infinity}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": -Infinity, "y": NaN}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": {"y": 1}}}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": null}'),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": {"x": null}}'),
    ({**JSON, **SCORE}, b"[" * 2000 + b"]" * 2000),
    ({**JSON, **SCORE}, b'{"entity": "7", "fields": ' + b"[" * 1500 + b"]" * 1500 + b"}"),
    ({**JSON, **SCORE}, b'{"entity": "7"} trailing'),
    ({**JSON, **SCORE}, b'\xef\xbb\xbf{"entity": "7"}'),  # a UTF-8 byte order mark
    ({**JSON, **SCORE}, (b"", b'{"entity": "7"}', b"")),  # chunked, empty chunks around
    ({**JSON, **SCORE}, (b'{"entity": "7"', b" " * 4090)),  # chunked, over the limit by a few bytes
]
PATHS = [
    "/v1/models/zipm/predict/",
    "/v1/models/zipm/predict?entity=8",
    "//v1/models/zipm/predict",
    "/v1/models/zipm%2Fx/predict",
    "/v1/models/%7A%69%70%6D/predict",  # zipm, percent-encoded
    "/v1/models/z%C3%A9/predict",
    "/v1/models/" + "m" * 10_000 + "/predict",
    "/v1/models/zipm/Predict",
    "/V1/models/zipm/predict",
]


def answer_any(client: TestClient, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any]:
    if method == "POST":
        return answer(client, path, headers, body)
    r = client.request(method, path, headers=headers)
    return r.status_code, (r.text, r.headers.get("content-type"), r.headers.get("x-content-type-options"))


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "no-keys"])
def test_hostile_requests_are_answered_as_the_route_answers_them(settings: Settings, keys: bool) -> None:
    """Each hostile variant, with and without keys configured, on the predict path and its neighbours, and
    with GET, HEAD and OPTIONS: the fast path's answer (status, body, content type, nosniff) is the
    route's, never a 500."""
    s = keyed(settings, max_request_bytes=4096)
    if not keys:
        s = s.model_copy(
            update={"scoring_api_keys": [], "ingest_api_keys": [], "read_api_keys": [], "admin_api_keys": []}
        )
    e = Embedded(s)
    e.save()
    with (
        TestClient(e.app(), base_url="http://localhost") as fast,
        TestClient(without_fast_path(e.app()), base_url="http://localhost") as route,
    ):
        requests = [("POST", PREDICT.format(name="zipm"), h, b) for h, b in HOSTILE + CASES]
        requests += [("POST", p, {**JSON, **SCORE}, b'{"entity": "7"}') for p in PATHS]
        requests += [(m, PREDICT.format(name="zipm"), SCORE, None) for m in ("GET", "HEAD", "OPTIONS")]
        for method, path, headers, body in requests:
            got = answer_any(fast, method, path, headers, body)
            want = answer_any(route, method, path, headers, body)
            assert got == want, (method, path[:80], headers, body and body[:80], got, want)
            assert got[0] < 500, (path[:80], headers, body and body[:80], got)


def raw(url: str, request: bytes, *, close_after_send: bool = False) -> bytes:
    """``request`` sent as it is on a socket to the server at ``url``; what the server answers until it
    closes the connection (nothing if the client leaves first). A request without ``Connection: close``
    (HTTP/1.1) is followed by the end of the client's side: the client leaving, maybe mid-body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        if close_after_send:
            return b""
        if b"HTTP/1.1" in request and b"Connection: close" not in request:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def status_and_body(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)[1] if head else b""
    if b"transfer-encoding: chunked" in head.lower():
        body = b"chunked"
    return status, body if b'"prediction_id"' not in body else b"a prediction"


def test_on_a_socket_hostile_framing_is_answered_as_the_route_answers_it(emb: Embedded) -> None:
    """On uvicorn: HTTP/1.0, a chunked body over the limit (no content-length), two Content-Length headers, a
    client leaving mid-body and one leaving before the answer: the same status and body with and without the
    fast path, never a 500, and the server answers the next request."""
    path = PREDICT.format(name="zipm").encode()
    key = SCORE_KEY.encode()
    body = b'{"entity": "7"}'
    head = b"POST " + path + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-API-Key: "
    requests = [
        b"POST "
        + path
        + b" HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nX-API-Key: "
        + key
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
        head + key + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        head
        + key
        + b"\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (1000, b" " * 1000) for _ in range(5))
        + b"0\r\n\r\n",
        head
        + key
        + b"\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        head + key + b"\r\nConnection: close\r\nContent-Length: 15\r\nContent-Length: 16\r\n\r\n" + body,
        head + key + b"\r\nContent-Length: 100\r\n\r\n" + body,  # leaves mid-body
    ]
    answers = []
    for app in (emb.app(), without_fast_path(emb.app())):
        with running(app) as url:
            got = [status_and_body(raw(url, r)) for r in requests]
            raw(url, head + key + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body, close_after_send=True)
            got.append(status_and_body(raw(url, requests[1])))  # still answering
            metrics = httpx.get(f"{url}/metrics", headers={"X-API-Key": KEYS["read"]}).text
            assert 'status="500"' not in metrics
            answers.append(got)
    fast, route = answers
    assert fast == route
    assert fast[0] == (b"200", b"a prediction") and fast[1] == (b"200", b"a prediction"), fast
    assert fast[2][0] == b"413" and fast[-1] == (b"200", b"a prediction"), fast
    assert all(status < b"500" for status, _ in fast), fast
