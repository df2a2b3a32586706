"""A window's aggregations compiled into a few specialised functions, so an event costs one Python call per
window and step, not one per aggregation (the engine's hot path; see :mod:`features.tiles`).

Like :mod:`dataclasses`, each window's functions are generated Python source, ``exec``'d once when the view
is loaded: every aggregation class of :mod:`features.aggregations` contributes its code inline, written out
again here from its methods (the tests run both against each other and against the oracle); any other
aggregation (a variance, a distinct count, a subclass) is called through its methods, unchanged.

A window's accumulators are a list ``accs`` (one per aggregation, in order); a tile is ``[k, *accs]``.

>>> from features.aggregations import Count, Mean, Max
>>> code = Compiled([Count(), Mean("x"), Max("x")])
>>> tile = code.new(7)
>>> for t, x in ((1, 2.0), (2, None), (3, 5)):
...     code.add(tile, None, t, t, {"x": x})
>>> tile
[7, [3], [2, 7.0], [5]]
>>> accs = code.copy(tile[1:])
>>> code.merge_tile(accs, tile)
>>> out = {}
>>> code.read(out, accs, 9)
>>> out
{'count_lifetime': 6, 'x_mean_lifetime': 3.5, 'x_max_lifetime': 5}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from features import aggregations as A
from features.summaries import KEEP_PARTIALS, renormalise

# what the generated lines call
HELPERS: dict[str, Any] = {"fsum": math.fsum, "renormalise": renormalise, "square": A._square}

__all__ = ["HELPERS", "INVERTIBLE", "Compiled", "add_lines", "literal", "merge_lines", "value_expr"]

# x: the event's value as a number to aggregate (features.summaries.number), None for anything else
_NUMBER = "x = v if (tv := type(v)) is float or tv is int else (float(v) if tv is bool else None)"
# the same for min and max, -0.0 made 0.0 (x + 0.0 is x for any other float): the two zeros are equal, and
# which one a tie kept depended on the order tiles were merged in (a state reloaded from JSON gave -0.0
# where the cached one gave 0.0)
_PICKED = (
    "x = v + 0.0 if (tv := type(v)) is float else (v if tv is int else (float(v) if tv is bool else None))"
)


def _grow(start: int, a: str = "a") -> list[str]:
    """Grow the partials ``a[start:]`` by the float ``x``: features.summaries.grow written inline (its loop's
    one step written out when there is one partial, the common case)."""
    # abs() without its call
    swap = ["if (x if x >= 0.0 else -x) < (y if y >= 0.0 else -y):", "    x, y = y, x"]
    return [
        f"if len({a}) == {start + 1}:",
        f"    y = {a}[{start}]",
        *("    " + line for line in swap),
        "    hi = x + y",
        "    lo = y - (hi - x)",
        "    if lo:",
        f"        {a}[{start}] = lo",
        f"        {a}.append(hi)",
        "    else:",
        f"        {a}[{start}] = hi",
        "else:",
        f"    i = {start}",
        f"    for j in range({start}, len({a})):",
        f"        y = {a}[j]",
        *("        " + line for line in swap),
        "        hi = x + y",
        "        lo = y - (hi - x)",
        "        if lo:",
        f"            {a}[i] = lo",
        "            i += 1",
        "        x = hi",
        f"    {a}[i:] = [x]",
        f"    if i - {start} >= {KEEP_PARTIALS}:",
        f"        renormalise({a}, {start})",
    ]


def _sum_add(start: int) -> list[str]:
    """Grow the partials ``a[start:]`` by the number ``x`` unless None."""
    return ["if x is not None:", "    x = float(x)", *("    " + line for line in _grow(start))]


def _sum_merge(start: int, sign: str) -> list[str]:
    """Grow the partials ``d[start:]`` by the partials ``s[start:]`` (``sign`` "-": by their negations)."""
    grow = _grow(start, "d")
    return [
        f"if len(s) == {start + 1}:  # one partial: the loop's one step",
        f"    x = {'-' if sign == '-' else ''}s[{start}]",
        *("    " + line for line in grow),
        "else:",
        f"    for x in s[{start}:]:" if start else "    for x in s:",
        *(["        x = -x"] if sign == "-" else []),
        *("        " + line for line in grow),
    ]


def _var_add() -> list[str]:
    """Lines adding the number ``x`` (unless None) to a variance's ``a = [n, sum of x, sum of x*x]``:
    aggregations.Var.add written out (the square split exactly, as aggregations._square)."""
    return [
        "if x is not None:",
        "    x = float(x)",
        "    a[0] += 1",
        "    if -1e150 < x < 1e150:",
        "        h2 = x * x",
        "        c2 = 134217729.0 * x",
        "        xh = c2 - (c2 - x)",
        "        xl = x - xh",
        "        l2 = ((xh * xh - h2) + 2.0 * xh * xl) + xl * xl",
        "    else:",
        "        h2, l2 = square(x)",
        "    p = a[1]",
        *("    " + line for line in _grow(0, "p")),
        "    p = a[2]",
        "    x = h2",
        *("    " + line for line in _grow(0, "p")),
        "    if l2:",
        "        x = l2",
        *("        " + line for line in _grow(0, "p")),
    ]


def _var_merge(sign: str) -> list[str]:
    """Lines merging a variance's ``s`` into ``d``: aggregations.Var.merge written out (``sign`` "-": taking
    it out, exact: both sums are exact, and the value depends on their totals only)."""
    lines = ["if s[0]:", f"    d[0] {sign}= s[0]"]
    for k in (1, 2):
        lines += [f"    p = d[{k}]", f"    for x in s[{k}]:", "        if x:"]
        lines += ["            x = -x"] if sign == "-" else []
        lines += ["            " + line for line in _grow(0, "p")]
    return lines


def _last(a: str, known: str, ts: str, seq: str, value: str) -> list[str]:
    """Lines keeping in ``a`` the value at the later position: ``(ts, seq)`` after ``(a[0], a[1])``."""
    later = f"{a}[0] is None or {ts} > {a}[0] or ({ts} == {a}[0] and {seq} > {a}[1])"
    sets = [f"    {a}[0] = {ts}", f"    {a}[1] = {seq}", f"    {a}[2] = {value}"]
    return [f"if {known} and ({later}):", *sets]


def add_lines(agg: A.Aggregation, i: int | str) -> list[str]:
    """Lines adding the event (value ``v``, time ``t``, sequence ``seq``) to the accumulator ``a``."""
    kind = type(agg)
    if kind is A.Count:
        return ["a[0] += 1"] if agg.field is None else ["if v is not None:", "    a[0] += 1"]
    if kind is A.Sum:
        return [_NUMBER, *_sum_add(0)]
    if kind is A.Mean:
        return [_NUMBER, "if x is not None:", "    a[0] += 1", *_sum_add(1)[1:]]
    if kind is A.Min or kind is A.Max:  # on a tie (5 == 5.0) the float, in any order (aggregations._pick)
        op = "<" if kind is A.Min else ">"
        better = f"a[0] is None or x {op} a[0] or (x == a[0] and type(x) is float)"
        return [_PICKED, f"if x is not None and ({better}):", "    a[0] = x"]
    if kind is A.Last:
        return _last("a", "v is not None", "t", "seq", "v")
    if kind is A.SinceLast:
        return ["if a[0] is None or t > a[0]:", "    a[0] = t"]
    if kind is A.Var or kind is A.Std:
        return [_NUMBER, *_var_add()]
    return [f"add_{i}(a, t, seq, v)"]


# the aggregations whose accumulators can be taken out of a merge exactly (counts, and exact sums: a
# variance's too)
INVERTIBLE = (A.Count, A.Sum, A.Mean, A.Var, A.Std)


def merge_lines(agg: A.Aggregation, i: int | str, sign: str = "+") -> list[str]:
    """Lines merging the accumulator ``s`` into ``d`` (``sign`` "-", INVERTIBLE only: taking it out)."""
    kind = type(agg)
    if kind is A.Count:
        return [f"d[0] {sign}= s[0]"]
    if kind is A.Sum:
        return _sum_merge(0, sign)
    if kind is A.Mean:
        return [f"d[0] {sign}= s[0]", *_sum_merge(1, sign)]
    if kind is A.Min or kind is A.Max:
        op = "<" if kind is A.Min else ">"
        better = f"d[0] is None or y {op} d[0] or (y == d[0] and type(y) is float)"
        return ["y = s[0]", f"if y is not None and ({better}):", "    d[0] = y"]
    if kind is A.Last:
        return _last("d", "s[0] is not None", "s[0]", "s[1]", "s[2]")
    if kind is A.SinceLast:
        return ["if s[0] is not None and (d[0] is None or s[0] > d[0]):", "    d[0] = s[0]"]
    if kind is A.Var or kind is A.Std:
        return _var_merge(sign)
    return [f"merge_{i}(d, s)"]


def value_expr(agg: A.Aggregation, i: int | str) -> str:
    """The aggregate's value from the accumulator ``a`` at reference time ``t``."""
    kind = type(agg)
    if kind is A.Count or kind is A.Min or kind is A.Max:
        return "a[0]"
    if kind is A.Sum:  # fsum of one partial p is p + 0.0 (-0.0 becomes 0.0)
        return "a[0] + 0.0 if len(a) == 1 else fsum(a)"
    if kind is A.Mean:
        return "((a[1] + 0.0 if len(a) == 2 else fsum(a[1:])) / a[0]) if a[0] else None"
    if kind is A.Last:
        return "a[2]"
    if kind is A.SinceLast:
        return "(t - a[0] if t > a[0] else 0) if a[0] is not None else None"
    return f"value_{i}(a, t)"


def _no_unmerge(d: list[Any], tile: list[Any]) -> None:
    raise TypeError("a window with an aggregation that is not INVERTIBLE cannot take a tile out")


def literal(acc: list[Any]) -> bool:
    """An empty accumulator written as a literal: plain ints, floats and None (no nested list)."""
    return all(x is None or type(x) is int or type(x) is float for x in acc)


class Compiled:
    """The generated functions of one window's aggregations ``aggs``:

    - ``new(k)``: a new empty tile ``k``; ``copy(accs)``: accumulators sharing nothing mutable with ``accs``;
    - ``add(tile, run, t, seq, values)``: the event (``values``: field -> value) added to ``tile`` and, unless
      None, to the accumulators ``run``;
    - ``merge(d, s)`` / ``merge_tile(d, tile)``: accumulators / a tile's merged into the accumulators ``d``;
    - ``unmerge_tile(d, tile)`` when ``invertible`` (every aggregation in INVERTIBLE): a tile's taken out;
    - ``read(out, accs, t)`` / ``read_tile(out, tile, t)``: every aggregate's value into ``out`` by name."""

    def __init__(self, aggs: Sequence[A.Aggregation]) -> None:
        self.aggs = tuple(aggs)
        scope: dict[str, Any] = dict(HELPERS)
        empties = [a.empty() for a in self.aggs]
        for i, a in enumerate(self.aggs):
            scope.update({f"add_{i}": a.add, f"merge_{i}": a.merge, f"value_{i}": a.value})
            scope.update({f"copy_{i}": a.copy, f"empty_{i}": a.empty})
        fields = sorted({a.field for a in self.aggs if a.field is not None})
        var = {f: f"v{j}" for j, f in enumerate(fields)}
        src = [
            "def new(k):",
            "    return [k, "
            + ", ".join(repr(e) if literal(e) else f"empty_{i}()" for i, e in enumerate(empties))
            + "]",
            "def copy(c):",
            "    return ["
            + ", ".join(
                f"c[{i}].copy()" if literal(e) else f"copy_{i}(c[{i}])" for i, e in enumerate(empties)
            )
            + "]",
        ]
        src += ["def add(tile, run, t, seq, values):"]
        src += [f"    {var[f]} = values.get({f!r})" for f in fields]
        for target, offset in (("tile", 1), ("run", 0)):
            pad = "    " if target == "tile" else "        "
            if target == "run":
                src.append("    if run is not None:")
            for i, a in enumerate(self.aggs):
                src.append(f"{pad}a = {target}[{i + offset}]")
                src.append(f"{pad}v = {var[a.field] if a.field is not None else 'None'}")
                src += [pad + line for line in add_lines(a, i)]
        # every aggregation INVERTIBLE: a moving range can take its leaving tiles out (unmerge_tile)
        self.invertible = all(type(a) in INVERTIBLE for a in self.aggs)
        merges = [("merge", 0, "+"), ("merge_tile", 1, "+")] + [("unmerge_tile", 1, "-")] * self.invertible
        for name, offset, sign in merges:
            src.append(f"def {name}(d0, s0):")
            for i, a in enumerate(self.aggs):
                src += [f"    d = d0[{i}]", f"    s = s0[{i + offset}]"]
                src += ["    " + line for line in merge_lines(a, i, sign)]
        for name, offset in (("read", 0), ("read_tile", 1)):
            src.append(f"def {name}(out, c, t):")
            for i, a in enumerate(self.aggs):
                src += [f"    a = c[{i + offset}]", f"    out[{a.name!r}] = {value_expr(a, i)}"]
        exec("\n".join(src), scope)  # the source generated above from the aggregations' classes
        self.source = "\n".join(src)
        self.new: Callable[[int], list[Any]] = scope["new"]
        self.copy: Callable[[list[Any]], list[Any]] = scope["copy"]
        self.add: Callable[[list[Any], list[Any] | None, int, int, Any], None] = scope["add"]
        self.merge: Callable[[list[Any], list[Any]], None] = scope["merge"]
        self.merge_tile: Callable[[list[Any], list[Any]], None] = scope["merge_tile"]
        self.unmerge_tile: Callable[[list[Any], list[Any]], None] = scope.get("unmerge_tile", _no_unmerge)
        self.read: Callable[[dict[str, Any], list[Any], int], None] = scope["read"]
        self.read_tile: Callable[[dict[str, Any], list[Any], int], None] = scope["read_tile"]
