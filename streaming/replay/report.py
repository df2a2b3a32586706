"""A replay's outputs: a terminal table of final metrics, the JSON result, and a self-contained HTML report
(metric-over-time curves per model with drift points, throughput), readable offline: the chart library is
inlined, no network and no build step."""

from __future__ import annotations

import html
import itertools
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streaming.replay.runner import ReplayResult

__all__ = ["html_report", "metrics_table", "new_output_dir", "print_result", "write_outputs"]


def metrics_table(result: ReplayResult) -> Table:
    names = sorted({m for r in result.models.values() for m in r.metrics if not m.startswith("rolling_")})
    table = Table(title=f"replay of {result.source}: {result.records:,} records, labels {result.labels}")
    for col in ("model", *names, "learned", "pending", "drifts"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in result.models.items():
        table.add_row(
            name,
            *(f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in names),
            f"{r.counters.get('learned', 0):,}",
            f"{r.counters.get('pending', 0):,}",
            str(r.counters.get("drifts", 0)),
        )
    return table


OWN = "streaming.replay.assets"


def _asset(*parts: str, package: str = "serving.assets") -> str:
    """A file of the report's own assets (``streaming.replay.assets``) or of the charts it shares with the
    dashboard (``serving.assets``: the chart helper and uPlot, one copy for both)."""
    return resources.files(package).joinpath(*parts).read_text(encoding="utf-8")


def html_report(result: ReplayResult) -> str:
    data = orjson.dumps(result.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    data = data.replace("</", "<\\/")  # never closes the script element
    title = html.escape(f"Rivulet replay: {result.source}")
    page = _asset("replay.html", package=OWN)
    for marker, text in (
        ("TITLE", title),
        ("CSS", _asset("uplot", "uPlot.min.css")),
        ("UPLOT", _asset("uplot", "uPlot.iife.min.js")),
        ("CHARTS", _asset("charts.js")),
        ("REPORT", _asset("replay.js", package=OWN)),
        ("DATA", data),
    ):
        page = page.replace(f"@@{marker}@@", text)
    return page


def write_outputs(result: ReplayResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "replay.json", "html": out / "replay.html"}
    paths["json"].write_bytes(
        orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    paths["html"].write_text(html_report(result), encoding="utf-8")
    return paths


def print_result(result: ReplayResult, console: Console, err_console: Console) -> None:
    """Final metrics and throughput on ``console``; what was not scored or was rejected, and why, on
    ``err_console``."""
    console.print(metrics_table(result))
    console.print(
        f"{result.read:,} records read, {result.records:,} scored in {result.elapsed_s:.1f} s "
        f"({result.rate:,.0f} records/s)"
    )
    for d in result.decisions:  # the lifecycle, as the live learner would have decided it
        if d["kind"] in ("promotion", "rollback"):
            ev = d.get("evidence") or {}
            losses = f"{ev.get('incumbent_loss', 0):.4f} -> {ev.get('candidate_loss', 0):.4f}"
            test = f"paired n {ev.get('n')}, losses {losses}, p {ev.get('p_value', 1):.2g}"
            console.print(
                f"{d['kind']}: {escape(str(d['model']))} replaced {escape(str(d['champion']))} after "
                f"{d['records']:,} records ({test})",
                highlight=False,
            )
    refused = {k: v for k, v in result.features.items() if k != "events" and v}
    if refused or result.skipped:
        counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in refused.items())
        skipped = f"{result.skipped:,} records not of their kind" if result.skipped else ""
        err_console.print(f"[yellow]not scored:[/] {', '.join(x for x in (counts, skipped) if x)}")
        for reason in result.rejected:
            err_console.print(f"  {reason}", highlight=False, markup=False)
    for name, m in result.models.items():  # what the learner's router refused, as the live learner would
        if m.rejected or m.status not in ("learning", "retired"):
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(m.rejected.items()))
            status = f" [red]{m.status}[/]" if m.status != "learning" else ""
            err_console.print(f"[yellow]rejected for {escape(name)}:[/] {why}{status}", highlight=False)


def new_output_dir(out: Path | None, replays: Path) -> Path:
    """The directory for a replay's outputs, made before the replay runs (an unusable ``out`` fails at
    once, with :class:`OSError`); without ``out``, a new one under ``replays`` named by the start time."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    replays.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        target = replays / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            target.mkdir()
            return target
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def curve_points(result: ReplayResult, model: str, metric: str) -> list[tuple[int, float]]:
    """(records, value) of one model's metric curve (for tests and notebooks)."""
    return [(int(n), float(v[metric])) for n, _, v in result.models[model].curve if metric in v]
