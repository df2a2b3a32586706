"""What a model version says in MLflow: the spec as parameters, the checkpoint's metrics, its lineage as
tags. Pure (no MLflow import): names and values are made ones MLflow takes (its key characters, its
length limits), so a spec's odd name or long value costs a truncated parameter, not a refused run.

>>> from river import linear_model, metrics
>>> from streaming.learning.spec import ModelSpec
>>> spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
>>> params = spec_params(spec)
>>> params["task"], params["metrics"], params["model.l2"]
('binary', 'Accuracy', '0.0')
>>> key("a b/c:d?"), value("x" * 7000)[-3:], len(value("x" * 7000))
('a b/c_d_', '...', 6000)
>>> tags = version_tags({"model": "lr~9", "version": 3, "offsets": {"f": {"0": 12}}, "river": "0.26.1"})
>>> tags["rivulet.offsets"], tags["rivulet.version"]
('{"f":{"0":12}}', '3')
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import orjson

from streaming.learning.spec import ModelSpec

__all__ = ["key", "metric_values", "spec_params", "value", "version_tags"]

MAX_VALUE = 6_000  # MLflow's limit of a parameter's value (tags: 8,000; model version tags: 5,000)
MAX_TAG = 5_000
MAX_KEY = 250
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow's keys: alphanumerics, _ - . space /


def key(name: Any) -> str:
    """A parameter, metric or tag name MLflow takes: other characters as ``_``, at most 250, and a path
    that is its own normal form (MLflow refuses ``a//b``, ``a/``, ``./a``, ``a/../b``, ``..a``: names are
    file names in some stores); such a name loses its slashes.

    >>> [key(n) for n in ("a//b", "step/", "./x", "a/../b", "..", ".", "/abs", "model.a/b")]
    ['a__b', 'step_', '__x', 'a_.._b', '_.', '_', '_abs', 'model.a/b']
    """
    text = _BAD_KEY.sub("_", str(name))[:MAX_KEY].strip() or "_"
    if not _normal(text):
        text = text.replace("/", "_")
        if text.startswith("."):
            text = "_" + text[1:]  # ".", "..", "..x"
    return text


def _normal(path: str) -> bool:
    norm = posixpath.normpath(path)
    return norm == path and norm != "." and not norm.startswith(("..", "/"))


def value(v: Any, limit: int = MAX_VALUE) -> str:
    """A value as MLflow keeps it: text, cut to ``limit`` (ending ``...`` where cut)."""
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flat(prefix: str, params: Mapping[str, Any], out: dict[str, str], depth: int = 0) -> None:
    for k, v in params.items():
        name = f"{prefix}.{k}"
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], Mapping) and depth < 8:
            out[key(name)] = value(getattr(v[0], "__name__", v[0]))  # River's (class, params) of a step
            _flat(name, v[1], out, depth + 1)
        elif isinstance(v, Mapping) and depth < 8:
            _flat(name, v, out, depth + 1)
        else:
            out[key(name)] = value(v)


def spec_params(spec: ModelSpec) -> dict[str, str]:
    """The spec as MLflow parameters: its fields, the model's class and River hyper-parameters
    (``model.<param>``, nested steps as ``model.<step>.<param>``)."""
    out: dict[str, str] = {
        "spec": value(spec.name),
        "task": spec.task,
        "view": value(spec.view),
        "metrics": value(",".join(getattr(m, "__name__", repr(m)) for m in spec.metrics)),
        "features": value(",".join(spec.features) if spec.features is not None else "*"),
        "rolling_window": str(spec.rolling_window),
        "classes": value(spec.classes) if spec.classes is not None else "None",
    }
    for name, policy in (
        ("drift", spec.drift),
        ("checkpoint", spec.checkpoint),
        ("promotion", spec.promotion),
    ):
        if policy is not None and dataclasses.is_dataclass(policy):
            for f in dataclasses.fields(policy):
                v = getattr(policy, f.name)
                out[key(f"{name}.{f.name}")] = value(getattr(v, "__name__", v) if callable(v) else v)
    try:
        model = spec.new_model()
        out["model"] = value(type(model).__name__)
        params = model._get_params() if hasattr(model, "_get_params") else {}
        _flat("model", params, out)
    except Exception as exc:  # a spec whose model cannot be built here: said, not fatal
        out["model"] = value(f"not described: {type(exc).__name__}")
    return out


def metric_values(header: Mapping[str, Any]) -> dict[str, float]:
    """The checkpoint's prequential metrics and counters, finite numbers only."""
    out: dict[str, float] = {}
    for group, prefix in (("metrics", ""), ("counters", "count.")):
        for k, v in (header.get(group) or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[key(f"{prefix}{k}")] = float(v)
    return out


def version_tags(header: Mapping[str, Any]) -> dict[str, str]:
    """A version's lineage: where it came from (offsets, base, features) and what wrote it."""

    def dumps(v: Any) -> str:
        return orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    tags = {
        "rivulet.model": header.get("model"),
        "rivulet.version": header.get("version"),
        "rivulet.spec": header.get("spec"),
        "rivulet.view": header.get("view"),
        "rivulet.role": header.get("role"),
        "rivulet.n_learned": header.get("n_learned"),
        "rivulet.offsets": dumps(header.get("offsets") or {}),
        "rivulet.feature_hash": header.get("feature_hash"),
        "rivulet.river_version": header.get("river"),
        "rivulet.python_version": header.get("python"),
        "rivulet.key_id": header.get("key_id"),
        "rivulet.epoch": header.get("epoch"),
    }
    return {
        k: value(v if isinstance(v, str) else dumps(v), MAX_TAG) for k, v in tags.items() if v is not None
    }
