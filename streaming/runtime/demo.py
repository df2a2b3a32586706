"""``rivulet demo``: the whole pipeline in one process on embedded defaults (see
:mod:`streaming.runtime.embedded`), a drifting synthetic stream, a live terminal view, and the API with the
dashboard on localhost."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from features.definitions import load_views
from features.errors import InvalidEvent
from features.events import Event
from streaming.ingest.rows import RowMapping, open_source
from streaming.learning.keys import generate
from streaming.learning.spec import load_specs
from streaming.runtime.embedded import EmbeddedStack
from streaming.settings import Settings

__all__ = ["Demo", "DemoStream", "demo_events"]


@dataclass(frozen=True, slots=True)
class DemoStream:
    """The demo's stream: ``n`` events (``None``: endless) of the drifting Agrawal stream (``synth:drift``),
    drifting at ``drift_at`` over ``drift_width`` events, over ``entities`` entities."""

    n: int | None
    seed: int
    drift_at: int
    drift_width: int
    entities: int = 10_000

    def events(self) -> Iterator[Event]:
        """The events, stamped with the wall clock as they are emitted (non-decreasing), so the demo is
        live: freshness is real."""
        mapping = RowMapping(entities=self.entities, start_ts=0)
        rows = open_source(
            "synth:drift", seed=self.seed, drift_at=self.drift_at, drift_width=self.drift_width
        )
        last = 0
        for i, row in enumerate(rows):
            if self.n is not None and i >= self.n:
                return
            try:
                event = mapping.to_event(row)
            except InvalidEvent:
                continue
            last = max(int(time.time() * 1000), last)  # never ahead of the clock, never backwards
            yield event.model_copy(update={"ts": last})

    def describe(self) -> dict[str, Any]:
        """What the summary says about it."""
        return {k: v for k, v in asdict(self).items() if k != "n"}


def demo_events(
    n: int | None, *, seed: int, drift_at: int, drift_width: int, entities: int = 10_000
) -> Iterator[Event]:
    """:meth:`DemoStream.events` of these parameters."""
    return DemoStream(n, seed, drift_at, drift_width, entities).events()


class Demo:
    """`rivulet demo`: the embedded stack fed with a :class:`DemoStream`, the API and a live view."""

    def __init__(
        self,
        settings: Settings,
        *,
        events: int | None,
        rate: float | None,
        seed: int = 42,
        drift_at: int | None = None,
        drift_width: int = 500,
        entities: int = 10_000,
        host: str = "127.0.0.1",
        port: int = 8000,
        hold: bool = False,
        record: Path | None = None,
        console: Console | None = None,
        live: bool = True,
    ) -> None:
        self.settings = settings
        self.specs = load_specs(settings.models_module)
        # only the views the models read: the demo computes nothing it does not use
        self.views = [
            v for v in load_views(settings.features_module) if v.name in {s.view for s in self.specs}
        ]
        self.stack = EmbeddedStack(settings, self.views, self.specs, generate())  # an ephemeral key pair
        self.rate = rate
        default_drift = events // 2 if events else 5_000
        self.stream = DemoStream(
            events, seed, default_drift if drift_at is None else drift_at, drift_width, entities
        )
        self.host, self.port, self.hold = host, port, hold
        self.record = record
        # opened here, so a path that cannot be written is an error before anything runs
        self._out: IO[bytes] | None = record.open("wb") if record else None
        self.console = console or Console()
        self.live = live
        self._interrupted = threading.Event()
        self.error: BaseException | None = None  # what stopped the pipeline thread, raised by run()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ the pipeline thread

    def _pipeline(self) -> None:
        out = self._out

        def write(event: Event) -> None:
            assert out is not None
            out.write(event.to_json() + b"\n")

        try:
            self.stack.run(self.stream.events(), rate=self.rate, on_event=write if out else None)
            if self.hold and not self.stack.stopped:
                self.stack.idle()  # the API may still post predictions and labels
        except BaseException as exc:  # handed to the main thread: the demo fails, it does not hang
            self.error = exc
            self.stack.stats.finished = True
        finally:
            if out is not None:
                out.close()

    # ------------------------------------------------------------------ the terminal view

    def view(self) -> Group:
        st = self.stack.stats
        head = Text.assemble(
            ("rivulet demo ", "bold"),
            f"{st.events:,} events ({st.rate:,.0f}/s) · {st.features:,} features records · ",
            f"{st.dead_letters} dead letters · {self.stack.dead_letters.sent} rejected by the learner · ",
            ("stream finished" if st.finished else "streaming", "green" if st.finished else "cyan"),
        )
        table = Table(expand=False)
        models = self.stack.metrics()
        names = sorted({k for m in models.values() for k in m["metrics"] if not k.startswith("rolling_")})
        for col in ("model", "role", "version", "learned", *names, "drifts", "last drift (event time)"):
            table.add_column(col, justify="left" if col in ("model", "role") else "right")
        for name, m in models.items():
            last = m["last_drift"]
            table.add_row(
                name,
                m["role"] or "",
                f"v{m['version']}" if m["version"] else "-",
                f"{m['learned']:,}",
                *(f"{m['metrics'].get(k, 0.0):.4f}" for k in names),
                str(m["drifts"]),
                time.strftime("%H:%M:%S", time.localtime(last / 1000)) if last else "-",
            )
        where = Text(f"API {self.url}/docs · dashboard {self.url}/dashboard · Ctrl-C to stop", style="dim")
        lines = [_decision_line(d) for d in self.stack.decisions()[-6:]]
        return Group(head, table, *([Text("\n".join(lines))] if lines else []), where)

    # ------------------------------------------------------------------ running it

    def run(self) -> dict[str, Any]:
        try:
            _check_port(self.host, self.port)
            previous = {
                sig: signal.signal(sig, lambda *_: self._interrupted.set())
                for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                asyncio.run(self._main())
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            self.stack.close()
            if self._out is not None:
                self._out.close()
        if self.error is not None:
            raise self.error
        return self.summary()

    async def _main(self) -> None:
        import uvicorn

        from serving.app import create_app
        from serving.embedded import EmbeddedServices

        services = EmbeddedServices(self.settings, self.stack)
        app = create_app(self.settings, services)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise OSError(f"the API could not start on {self.url} (is the port in use? try --port)")
            await asyncio.sleep(0.05)
        thread = threading.Thread(target=self._pipeline, name="rivulet-demo-pipeline", daemon=True)
        thread.start()
        try:
            with (
                Live(self.view(), console=self.console, refresh_per_second=4, transient=False)
                if self.live
                else _Null() as live
            ):
                while not self._interrupted.is_set() and not serving.done():
                    if self.error is not None or (self.stack.stats.finished and not self.hold):
                        break
                    live.update(self.view())
                    await asyncio.sleep(0.25)
                live.update(self.view())
        finally:
            self.stack.stop()
            await asyncio.to_thread(thread.join)
            server.should_exit = True
            await serving

    def summary(self) -> dict[str, Any]:
        st = self.stack.stats
        return {
            "events": st.events,
            "features_records": st.features,
            "dead_letters": st.dead_letters,
            "learner_dead_letters": self.stack.dead_letters.sent,  # records the learner rejected
            "seconds": time.monotonic() - st.started,
            "events_per_s": st.rate,
            **self.stream.describe(),
            "features_module": self.settings.features_module,
            "models_module": self.settings.models_module,
            "models": self.stack.metrics(),
            **lifecycle(self.stack.decisions()),
        }


def lifecycle(decisions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The summary's ``promotions`` and ``rollbacks``: the model (spec), from, to, the record after which
    (its topic, partition and offset, and event time) and the evidence; ``challengers``: those started."""
    out: dict[str, list[dict[str, Any]]] = {"promotions": [], "rollbacks": [], "challengers": []}
    for d in decisions:
        key = {"promotion": "promotions", "rollback": "rollbacks", "challenger": "challengers"}.get(d["kind"])
        if key is not None:
            out[key].append(
                {
                    "model": d["spec"], "from": d["champion"], "to": d["model"], "at": d["position"],
                    "ts": d["ts"], "why": d["why"], "evidence": d["evidence"],
                }
            )  # fmt: skip
    return out


def _decision_line(d: dict[str, Any]) -> str:
    ev = d.get("evidence") or {}
    test = f" (paired n {ev['n']}, p {ev['p_value']:.2g})" if ev else ""
    return f"{d['kind']}: {d['model']} (champion {d['champion']}){test} {d['why']}"


def _check_port(host: str, port: int) -> None:
    """A clear error before anything starts when the API's address is taken (uvicorn would exit)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot serve the API on {host}:{port} ({exc.strerror}): try --port") from None


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *_: object) -> None:
        return None


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
