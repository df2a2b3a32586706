"""Declaring features: derived fields, aggregations and expressions, grouped into feature views.

A :class:`FeatureView` is keyed by one entity: ``entity="entity"`` (the default) is the event's own entity
key; any other name is a field of the event, and the view is re-keyed by that field's value.

>>> from features.aggregations import Count, Mean
>>> from features.windows import sliding
>>> view = FeatureView(
...     name="user",
...     aggregations=[Count(window=sliding("1h")), Mean("amount", window=sliding("1h"))],
...     derived=[Derived("big", lambda f: f["amount"] > 100)],
...     expressions=[Expression("amount_vs_mean", lambda v: v["amount"] / v["amount_mean_1h"])],
...     ttl="7d",
... )
>>> view.feature_names
['count_1h', 'amount_mean_1h', 'amount_vs_mean']
>>> view.ttl_s, view.horizon_ms
(604800, 3660000)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.aggregations import Aggregation
from features.errors import DefinitionError
from features.tiles import Tiled, lifetime_resolution, tilings
from features.windows import Window, duration_ms

__all__ = ["Derived", "Expression", "FeatureView", "load_views"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Derived:
    """A field computed from the event itself: ``fn(fields)``, where ``fields`` holds the event's fields and
    the derived fields declared before this one. An exception in ``fn`` (say, a division by zero or a missing
    field) makes the value null, the same way in every adapter."""

    name: str
    fn: Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Expression:
    """A feature computed from the vector (fields, derived fields, aggregates, earlier expressions):
    ratios, differences. Exceptions make it null, as for :class:`Derived`."""

    name: str
    fn: Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class FeatureView:
    name: str
    aggregations: Sequence[Aggregation] = ()
    entity: str = "entity"
    derived: Sequence[Derived] = ()
    expressions: Sequence[Expression] = ()
    ttl: int | str | None = None
    allowed_lateness: int | str = "1m"
    include_fields: bool = True
    _windows: tuple[tuple[Window, tuple[Aggregation, ...]], ...] = field(
        init=False, repr=False, compare=False
    )
    _tiled: tuple[Tiled, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or ":" in self.name:
            raise DefinitionError(f"feature view name {self.name!r}: use letters, digits, '_', '-', '.'")
        if not self.entity:
            raise DefinitionError(f"view {self.name!r}: entity must name the key ('entity' or a field)")
        names = [
            *(d.name for d in self.derived),
            *(a.name for a in self.aggregations),
            *(e.name for e in self.expressions),
        ]
        seen: set[str] = set()
        for n in names:
            if not _NAME.match(n):
                raise DefinitionError(f"view {self.name!r}: feature name {n!r} is not a valid name")
            if n in seen:
                raise DefinitionError(f"view {self.name!r}: feature {n!r} is defined twice")
            seen.add(n)
        for a in self.aggregations:
            if not isinstance(a, Aggregation):
                raise DefinitionError(f"view {self.name!r}: {a!r} is not an aggregation")
        duration_ms(self.allowed_lateness)
        if self.ttl is not None and duration_ms(self.ttl) < 1000:
            raise DefinitionError(f"view {self.name!r}: ttl must be at least one second")
        groups: dict[Window, list[Aggregation]] = {}
        for a in self.aggregations:
            groups.setdefault(a.window, []).append(a)
        object.__setattr__(self, "_windows", tuple((w, tuple(aggs)) for w, aggs in groups.items()))
        # the tiles of each window (features.tiles); one that could keep too many is refused here
        object.__setattr__(self, "_tiled", tuple(tilings(self.aggregations, self.lateness_ms)))

    # ------------------------------------------------------------------ derived facts

    @property
    def rekeyed(self) -> bool:
        """True when the view is keyed by a field of the event rather than by the event's entity."""
        return self.entity != "entity"

    @property
    def lateness_ms(self) -> int:
        return duration_ms(self.allowed_lateness)

    @property
    def ttl_s(self) -> int | None:
        return duration_ms(self.ttl) // 1000 if self.ttl is not None else None

    @property
    def horizon_ms(self) -> int:
        """How much event time behind the watermark the entity's state keeps event by event."""
        return max((a.window.extent_ms for a in self.aggregations), default=0) + self.lateness_ms

    @property
    def windows(self) -> tuple[tuple[Window, tuple[Aggregation, ...]], ...]:
        return self._windows

    @property
    def tiled(self) -> tuple[Tiled, ...]:
        """The view's windows as tiles (lifetime first): what an entity's state keeps."""
        return self._tiled

    @property
    def feature_names(self) -> list[str]:
        """Names the view adds to a vector (besides the event's own and derived fields)."""
        return [*(a.name for a in self.aggregations), *(e.name for e in self.expressions)]

    @property
    def inputs(self) -> list[str]:
        """Fields the aggregations read (kept per event in the entity's state)."""
        return sorted({a.field for a in self.aggregations if a.field is not None})

    def fingerprint(self) -> str:
        """A hash of the definition: changes whenever what the view computes changes."""
        parts = [self.name, self.entity, str(self.lateness_ms), str(self.include_fields)]
        parts += [f"derived {d.name} {_source(d.fn)}" for d in self.derived]
        parts += [a.describe() + _semantics(a.window, self.lateness_ms) for a in self.aggregations]
        parts += [f"expr {e.name} {_source(e.fn)}" for e in self.expressions]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _semantics(window: Window, lateness_ms: int) -> str:
    """What a window's definition alone does not say about what it computes: a hopping window whose step
    does not divide its size got a new lower bound in issue 12 (the start of the oldest window holding the
    event), and every window is computed over tiles since issue 13 (a lifetime window's resolution comes
    from the view's lateness), so views get a new fingerprint and a checkpoint trained on the old values
    says so.

    >>> from features.windows import hopping, lifetime
    >>> _semantics(hopping("10m", "3m"), 0), _semantics(hopping("10m", "5m"), 0), _semantics(lifetime(), 600)
    (' lower=oldest-window tiles@180000', ' tiles@300000', ' tiles@10')
    """
    r = window.resolution_ms or lifetime_resolution(lateness_ms)
    lower = " lower=oldest-window" if window.kind == "hopping" and window.size_ms % window.step_ms else ""
    return f"{lower} tiles@{r}"


def _source(fn: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return code.co_code.hex() if code is not None else repr(fn)


def load_views(spec: str) -> list[FeatureView]:
    """Feature views from a module path (``pkg.module``) or ``pkg.module:ATTR``.

    Without ``:ATTR`` the module's ``VIEWS`` list is used, or else every ``FeatureView`` it defines.

    >>> [v.name for v in load_views("features.examples")]
    ['customer', 'site']
    """
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(f"cannot import feature definitions {module_name!r}: {exc}") from exc
    if attr:
        found = getattr(module, attr, None)
        if found is None:
            raise DefinitionError(f"{module_name!r} has no attribute {attr!r}")
    else:
        found = getattr(module, "VIEWS", None)
        if found is None:
            found = [v for v in vars(module).values() if isinstance(v, FeatureView)]
    views = [found] if isinstance(found, FeatureView) else list(found)
    if not views or not all(isinstance(v, FeatureView) for v in views):
        raise DefinitionError(f"{spec!r} defines no feature views (a VIEWS list of FeatureView)")
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{spec!r}: feature view names repeat: {names}")
    return views
