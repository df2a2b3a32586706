"""A view's in-order path as ONE generated function: what :meth:`FeatureEngine.apply
<features.engine.FeatureEngine.apply>` does for an event at or after the entity's watermark, written out
straight, window after window, with every window's aggregations inline (:mod:`features.compiled` supplies
their lines). No loop over the windows and no call per window on the common paths: a cached range read as
it is, a range moving forward (taking the tiles that leave it out, or through the monotonic queues of a
min/max window), a new latest tile, the oldest tile expiring. The rare paths call the generic code,
which stays the reference: a range rebuilt, a window of other aggregations moving (two stacks), retention
of more than one tile, and every event out of order (the whole generic ``apply``).

The state it leaves is exactly the generic path's: the same tiles, accumulators, settled accumulators,
sequence, watermark, ids and bounds, so ``to_json()`` is byte-identical and the vectors are equal
(tests/features/test_fused.py runs both side by side). The source is kept on ``source`` for debugging.

>>> from features.engine import FeatureEngine
>>> from features.examples import customer
>>> engine = FeatureEngine(customer)
>>> "def apply(state, event, check=None):" in engine.fused.source  # type: ignore[union-attr]
True
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from features import aggregations as A
from features.compiled import HELPERS, add_lines, literal, merge_lines, value_expr
from features.errors import AggregateOverflow
from features.numeric import SUM_LIMIT
from features.state import MAX_IDS, id_hash
from features.tiles import Tiled, tile_k

if TYPE_CHECKING:
    from features.engine import FeatureEngine

__all__ = ["Fused"]

# aggregations whose values are event values or counts, in the numeric domain by construction (events and
# derived fields are checked there): the finiteness safeguard is not generated for them
_DOMAIN = (A.Count, A.Min, A.Max, A.Last, A.SinceLast)


def _indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line for line in lines]


class _Window:
    """The generated lines of one window ``w`` of the view (names suffixed ``{w}_`` cannot clash with the
    names the aggregations' lines use: a, v, x, tv, y, d, s, i, j, hi, lo, t, seq)."""

    def __init__(self, tw: Tiled, w: int, inputs: dict[str, str], scope: dict[str, Any]) -> None:
        self.tw, self.w, self.inputs = tw, w, inputs
        self.refs = [f"{w}_{i}" for i in range(len(tw.aggs))]
        for ref, a in zip(self.refs, tw.aggs, strict=True):
            scope.update({f"add_{ref}": a.add, f"merge_{ref}": a.merge, f"value_{ref}": a.value})
            scope[f"empty_{ref}"] = a.empty
        scope[f"tw{w}_"] = tw
        empties = [a.empty() for a in tw.aggs]
        slots = (repr(e) if literal(e) else f"empty_{r}()" for r, e in zip(self.refs, empties, strict=True))
        self.new = f"[k{w}_, " + ", ".join(slots) + "]"
        n = f"{w}_"
        self.T, self.k, self.c, self.lo, self.A = f"T{n}", f"k{n}", f"c{n}", f"lo{n}", f"A{n}"

    def merge(self, d0: str, s0: str, offset: int, sign: str = "+") -> list[str]:
        """Lines merging the accumulators (or tile, ``offset`` 1) ``s0`` into the accumulators ``d0``."""
        out = []
        for i, (ref, a) in enumerate(zip(self.refs, self.tw.aggs, strict=True)):
            out += [f"d = {d0}[{i}]", f"s = {s0}[{i + offset}]", *merge_lines(a, ref, sign)]
        return out

    def add(self, target: str, offset: int) -> list[str]:
        """Lines adding the event (time ``t``, sequence ``seq``, inputs ``in*_``) to ``target``."""
        out = []
        for i, (ref, a) in enumerate(zip(self.refs, self.tw.aggs, strict=True)):
            v = self.inputs[a.field] if a.field is not None else "None"
            out += [f"a = {target}[{i + offset}]", f"v = {v}", *add_lines(a, ref)]
        return out

    def read(self) -> list[str]:
        """Lines finding the window's range at ``t`` (moving its cache) and writing its aggregates."""
        tw, T, k, c, lo, key = self.tw, self.T, self.k, self.c, self.lo, repr(self.tw.key)
        r = tw.resolution
        out = [f"{T} = tiles[{key}]", f"{k} = t // {r}" if r != 1 else f"{k} = t", f"{c} = cache.get({key})"]
        if tw.kind == "lifetime":
            out += [
                f"if {c} is None or ({T} and {k} < {T}[-1][0]):",
                f"    {c} = cache[{key}] = [None, None, tw{self.w}_.merged({T}, None, {k}, state.settled)]",
            ]
        else:
            if tw.kind == "hopping":  # Window.first_tile
                out.append(f"{lo} = (t - {tw.window.size_ms}) // {tw.window.step_ms} + 1")
            else:
                out.append(f"{lo} = {k} - {tw.span}")
            out.append(f"if {c} is None or {c}[0] != {lo} or {c}[1] != {k}:")
            out += _indent(self.move(), 1)
        out.append(f"{self.A} = {c}[2]")
        for i, (ref, a) in enumerate(zip(self.refs, tw.aggs, strict=True)):
            out += [f"a = {self.A}[{i}]"]
            if type(a) in _DOMAIN:
                out.append(f"vector[{a.name!r}] = {value_expr(a, ref)}")
            else:  # cannot happen from a checked state: a last safeguard (the generic path's)
                out += [
                    f"x = {value_expr(a, ref)}",
                    "if type(x) is float and x - x != 0.0:",
                    f"    raise ArithmeticError({f'aggregate {a.name!r} is not finite'!r})",
                    f"vector[{a.name!r}] = x",
                ]
        return out

    def move(self) -> list[str]:
        """Lines moving the cached range ``c`` to ``[lo, k]``: Tiled.slide / Tiled.select written out for
        a range moving forward; a rebuild, or a window of other aggregations, through Tiled.move."""
        tw, T, k, c, lo, key, w = self.tw, self.T, self.k, self.c, self.lo, repr(self.tw.key), self.w
        if tw.code.invertible:  # Tiled.slide
            return [
                f"if {c} is None or {lo} < {c}[0] or {k} < {c}[1] or {lo} > {c}[1]:",
                f"    {c} = cache[{key}] = [{lo}, {k}, tw{w}_.merged({T}, {lo}, {k})]",
                "else:",
                f"    n_ = len({T})",
                f"    if {lo} > {c}[0] and n_:  # the tiles of [c[0], lo) leave the range",
                f"        p_ = 0 if {T}[0][0] >= {c}[0] else bisect_left({T}, {c}[0], key=tile_k)",
                f"        r_ = {c}[2]",
                f"        while p_ < n_ and {T}[p_][0] < {lo}:",
                f"            s_ = {T}[p_]",
                *_indent(self.merge("r_", "s_", 1, "-"), 3),
                "            p_ += 1",
                f"    if {k} > {c}[1] and n_ and {T}[-1][0] > {c}[1]:  # tiles of (c[1], k] enter it",
                f"        tw{w}_.slide_in({c}, {T}, {k})",
                f"    {c}[0] = {lo}",
                f"    {c}[1] = {k}",
            ]
        if not tw.picks:
            return [f"{c} = cache[{key}] = tw{w}_.move({c}, {T}, {lo}, {k})"]
        return self.select()

    def select(self) -> list[str]:
        """Lines moving the cached range of a min/max window: Tiled.select written out."""
        tw, T, k, c, lo, key, w = self.tw, self.T, self.k, self.c, self.lo, repr(self.tw.key), self.w
        out = [
            f"if {c} is None or {lo} < {c}[0] or {k} < {c}[1]:",
            f"    {c} = cache[{key}] = tw{w}_.select({c}, {T}, {lo}, {k})",
            "else:",
            f"    q_ = {c}[3]",
            f"    m_ = {c}[1] if {c}[1] > {lo} else {lo}",
            f"    n_ = len({T})",
            f"    if n_ and {T}[-1][0] >= m_:",
            f"        p_ = n_ - 1 if n_ == 1 or {T}[-2][0] < m_ else bisect_left({T}, m_, key=tile_k)",
            f"        while p_ < n_ and {T}[p_][0] < {k}:  # the tiles that joined the range's earlier part",
            f"            s_ = {T}[p_]",
        ]
        for j, top in enumerate(tw.picks):
            op = "<" if top else ">"
            out += [
                f"            q = q_[{j}]",
                f"            v = s_[{j + 1}][0]",
                "            if v is not None:",
                f"                while q and ((h := q[-1][1]) {op} v or (h == v and (type(v) is float or"
                " type(h) is not float))):",
                "                    q.pop()",
                "                q.append((s_[0], v))",
            ]
        out += ["            p_ += 1", "    r_ = []"]
        for j in range(len(tw.picks)):
            out += [
                f"    q = q_[{j}]",
                f"    while q and q[0][0] < {lo}:",
                "        q.popleft()",
                "    r_.append([q[0][1] if q else None])",
            ]
        return [
            *out,
            f"    if n_ and {T}[-1][0] == {k}:  # the current tile",
            f"        tw{w}_.code.merge_tile(r_, {T}[-1])",
            f"    {c}[0] = {lo}",
            f"    {c}[1] = {k}",
            f"    {c}[2] = r_",
        ]

    def write(self) -> list[str]:
        """Lines adding the event to its tile (the latest, or a new latest one) and to the cached range."""
        T, k, w = self.T, self.k, self.w
        return [
            f"if {T} and {T}[-1][0] == {k}:",
            f"    tile = {T}[-1]",
            f"elif not {T} or {T}[-1][0] < {k}:  # a new latest tile: the common case of a sparse stream",
            f"    tile = {self.new}",
            f"    {T}.append(tile)",
            "else:",
            f"    tile = tw{w}_.tile({T}, {k})",
            *self.add("tile", 1),
            *self.add(self.A, 0),  # in order, the cache's range ends with the event's tile
        ]

    def retain(self) -> list[str]:
        """Lines dropping the tiles that expired (lifetime: folded into settled first): Tiled.retain."""
        tw, T = self.tw, self.T
        x = f"t - {tw.lateness}" if tw.lateness else "t"
        if tw.kind == "hopping":  # Window.first_tile
            cut = f"({x} - {tw.window.size_ms}) // {tw.window.step_ms} + 1"
        else:
            cut = f"({x}) // {tw.resolution} - {tw.span}"
        fold: list[str] = []
        if tw.kind == "lifetime":
            fold = [f"s_ = {T}[p_]"]
            for i, (ref, a) in enumerate(zip(self.refs, tw.aggs, strict=True)):
                fold += [f"d = settled[{a.name!r}]", f"s = s_[{i + 1}]", *merge_lines(a, ref)]
        return [
            f"if {T} and t >= {T}[0][0] * {tw.resolution} + {tw.expiry}:  # the oldest tile expired",
            f"    cut_ = {cut}",
            "    p_ = 0",
            f"    n_ = len({T})",
            f"    while p_ < n_ and {T}[p_][0] < cut_:",
            *_indent(fold, 2),
            "        p_ += 1",
            f"    del {T}[:p_]",
        ]


class Fused:
    """The generated in-order ``apply(state, event, check=None)`` of one engine's view (module docstring);
    events out of order go to ``generic`` (the engine's generic apply)."""

    def __init__(self, engine: FeatureEngine, generic: Callable[..., Any]) -> None:
        view = engine.view
        scope: dict[str, Any] = {
            "generic": generic,
            "key": engine.key,
            "safe": _safe_fn(),
            **HELPERS,
            "bisect_left": bisect_left,
            "bisect_right": bisect_right,
            "tile_k": tile_k,
            "id_hash": id_hash,
            "AggregateOverflow": AggregateOverflow,
            "EMPTY_": {},
            "ZERO_": (0.0, 0.0),
        }
        inputs = {f: f"in{j}_" for j, f in enumerate(engine.layout.inputs)}
        windows = [_Window(tw, w, inputs, scope) for w, tw in enumerate(engine.layout.tiled)]
        src = [
            "def apply(state, event, check=None):",
            "    t = event.ts",
            "    wm = state.watermark",
            "    if wm is not None and t < wm:",
            "        return generic(state, event, check)",
        ]
        # an input is read where the generic path reads it (FeatureEngine.apply_generic): the fields and
        # derived fields (``full``) when the view includes the fields, else a derived field's value, or the
        # event's own field (a derived function that changes the mapping it is given changes neither)
        derived = {d.name for d in view.derived}
        body = _own(view, scope) + [
            f"{v} = {'full' if view.include_fields or f in derived else 'event.fields'}.get({f!r})"
            for f, v in inputs.items()
        ]
        body += _bounds(engine, inputs)
        body += ["cache = state.cache", "tiles = state.tiles"]
        for win in windows:
            body += win.read()
        for j, e in enumerate(view.expressions):
            scope[f"efn{j}_"] = e.fn
            body.append(f"vector[{e.name!r}] = safe(efn{j}_, vector)")
        body += ["if check is not None:", "    check(vector)", "# nothing below can fail"]
        for j, f in enumerate(engine.layout.bounded):
            body += [f"if b{j}_ is not None:", "    sb_ = state.bounds", "    if sb_ is None:"]
            body += ["        sb_ = state.bounds = {}", f"    sb_[{f!r}] = b{j}_"]
        body.append("state.seq = seq = state.seq + 1")
        for win in windows:
            body += win.write()
        if view.rekeyed:
            body += ["ids_ = state.ids", "ids_.append(id_hash(event.event_id))", f"if len(ids_) > {MAX_IDS}:"]
            body.append(f"    del ids_[: len(ids_) - {MAX_IDS}]")
        body += ["if wm is None or t > wm:", "    state.watermark = t", "    settled = state.settled"]
        for win in windows:
            body += _indent(win.retain(), 1)
        src += _indent([*body, "return vector"], 1)
        self.source = "\n".join(src)
        exec(self.source, scope)  # generated above from the view's windows and aggregations' classes
        self.apply: Callable[..., Any] = scope["apply"]


def _own(view: Any, scope: dict[str, Any]) -> list[str]:
    """Lines making ``full`` (the fields and derived fields, what the inputs are read from) and ``vector``
    (the event's own part: FeatureEngine.own)."""
    if not view.derived and not view.include_fields:
        return ["full = event.fields", "vector = {}"]
    out = ["full = dict(event.fields)"]
    for j, d in enumerate(view.derived):
        scope[f"dfn{j}_"] = d.fn
        out.append(f"full[{d.name!r}] = safe(dfn{j}_, full)")
    if view.include_fields:
        return [*out, "vector = full"]
    return [*out, "vector = {" + ", ".join(f"{d.name!r}: full[{d.name!r}]" for d in view.derived) + "}"]


def _bounds(engine: FeatureEngine, inputs: dict[str, str]) -> list[str]:
    """Lines computing each bounded field's new magnitudes into ``b*_`` (None: unchanged), raising
    AggregateOverflow past the limit (FeatureEngine._bounds)."""
    if not engine.layout.bounded:
        return []
    out = ["sb_ = state.bounds or EMPTY_"]
    name = repr(engine.view.name)
    for j, (f, (by_sum, by_square)) in enumerate(engine.layout.bounded.items()):
        out += [f"v = {inputs[f]}", f"b{j}_ = None", "if not (type(v) is str or v is None or not v):"]
        out += ["    x = v if type(v) is float else float(v)", f"    p_ = sb_.get({f!r}) or ZERO_"]
        out += ["    a_ = p_[0] + (x if x >= 0.0 else -x)", "    q_ = p_[1] + x * x"]
        if by_sum:
            out += [f"    if not a_ <= {SUM_LIMIT!r}:"]
            out += [f"        raise AggregateOverflow({name}, key(event) or '', {f!r}, 'sum of magnitudes')"]
        if by_square:
            out += [f"    if not 4.0 * q_ <= {SUM_LIMIT!r}:"]
            out += [f"        raise AggregateOverflow({name}, key(event) or '', {f!r}, 'sum of squares')"]
        lim = repr(SUM_LIMIT)  # min(a_, lim) without its call (neither can be NaN)
        out += [f"    b{j}_ = [a_ if a_ <= {lim} else {lim}, q_ if q_ <= {lim} else {lim}]"]
    return out


def _safe_fn() -> Callable[[Any, Any], Any]:
    from features.engine import _safe  # the engine's: one definition of a derived field's value

    return _safe
