# cython: language_level=3, boundscheck=True, wraparound=True, nonecheck=True, cdivision=False
# cython: infer_types=False
"""The in-order path of :mod:`features.fused`, compiled (Cython): one generic step over the view's windows and
aggregations, whose every line is the generated function's, so the states it leaves and the vectors it
returns are the same (tests/features/test_fused.py runs the three paths side by side).

It works on the state as it is (the lists of :mod:`features.state`: no conversion, nothing to keep in
step), with the floats as C doubles inside the exact sums. What the generated function calls in Python,
this calls too: the generic ``apply`` for an event out of order, ``Tiled.merged`` / ``select`` / ``move`` /
``tile`` for a range rebuilt or an earlier tile, ``math.fsum`` for a sum of several partials, derived fields
and expressions, and every aggregation that is not one of the built-in classes (a distinct count, a
subclass) through its methods. ``renormalise`` and the variance's value are compiled
(features/_native_exact.pxi, included), and call the Python ones for what they leave to them.

An event in order allocates as little as the state's lists let it: the call's buffers (inputs, ranges,
tiles) are the step's own, reused (a call from inside a call, through a derived field, an expression or
``check``, gets new ones); an expired tile that nothing but its window's list holds (nor its accumulators:
counted references) is emptied and kept as the window's spare for its next new tile; a bounded field's
magnitudes go into the list already in ``bounds`` when only the state holds it; a min/max range's
accumulators are rewritten when only its cache holds them. Nobody can see any of it:
an object no one else references cannot be seen changing (tests/features/test_native_reuse.py holds each
from outside).

Floating point: built with ``-ffp-contract=off`` (setup.py) so that no multiply-add is fused; every
operation is the IEEE double operation Python performs.
"""

from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SetSlice
from cpython.object cimport PyObject
from cpython.ref cimport Py_REFCNT
from libc.math cimport fabs

import math

from features import aggregations as A
from features.errors import AggregateOverflow
from features.numeric import SUM_LIMIT
from features.state import MAX_IDS, id_hash
from features.summaries import KEEP_PARTIALS, renormalise

cdef object _fsum = math.fsum
cdef object _float = float  # the builtin, called: Cython's inlined float() parses strings its own way
cdef object _square = A._square
cdef object _renormalise = renormalise
cdef object _id_hash = id_hash
cdef double _LIMIT = SUM_LIMIT
cdef long long _MAX_LL = 9223372036854775807
cdef Py_ssize_t _KEEP = KEEP_PARTIALS
cdef Py_ssize_t _MAX_IDS = MAX_IDS

cdef extern from "Python.h":
    int _del_slice "PyList_SetSlice"(object a, Py_ssize_t lo, Py_ssize_t hi, PyObject *none) except -1
    dict _presized "_PyDict_NewPresized"(Py_ssize_t n)  # a dict with room for n items (CPython 3.11)
    Py_ssize_t _refs "Py_REFCNT"(PyObject *o)  # on a borrowed pointer: no reference of its own counted

include "_native_exact.pxi"

cdef enum:
    _MAX_BOUNDED = 64  # bounded fields a view may have for the step (more: the fused path, engine.py)
    _SPARE = 4  # spare tiles a window keeps (_spare)

# aggregation kinds (exact classes only; anything else is OTHER, called through its methods)
cdef enum:
    OTHER = 0
    COUNT = 1
    COUNT_FIELD = 2
    SUM = 3
    MEAN = 4
    MIN = 5
    MAX = 6
    LAST = 7
    SINCE = 8
    VAR = 9

# window kinds and how a cached range moves
cdef enum:
    LIFETIME = 0
    SLIDING = 1  # sliding and tumbling: the range is [k - span, k]
    HOPPING = 2
cdef enum:
    SLIDE = 0  # invertible: tiles taken out and merged in
    SELECT = 1  # min and max only: monotonic queues
    MOVE = 2  # anything else: Tiled.move


cdef class _Agg:
    cdef int kind
    cdef Py_ssize_t inp  # index of the input read, -1: none
    cdef bint domain  # values in the numeric domain by construction (no finiteness safeguard)
    cdef object name, add, merge, value, empty, blank, bad, copy
    cdef bint literal  # ``blank`` is a flat list: a new tile's accumulator is a copy of it
    cdef bint root  # VAR: a standard deviation (the square root of the variance)


cdef class _Win:
    cdef int kind, mode
    cdef long long r, span, size, step, expiry, lateness
    cdef object key, tw, picks
    cdef tuple aggs
    cdef Py_ssize_t n
    cdef bint recycle  # every accumulator a flat literal: an expired tile nobody else holds is reused
    cdef list spare  # such tiles, emptied, for the next new tile (features of no state: nothing sees them)


cdef inline object _number(object v):
    """features.summaries.number: floats and ints as they are, booleans as 0/1, anything else None."""
    cdef type tv = type(v)
    if tv is float or tv is int:
        return v
    if tv is bool:
        return 1.0 if v else 0.0
    return None


cdef inline object _picked(object v):
    """The value a min or max keeps: -0.0 as 0.0 (fused._PICKED)."""
    cdef type tv = type(v)
    if tv is float:
        return <double>v + 0.0
    if tv is int:
        return v
    if tv is bool:
        return 1.0 if v else 0.0
    return None


cdef int _grow(list a, Py_ssize_t start, double x) except -1:
    """features.summaries.grow: add ``x`` exactly to the partials ``a[start:]`` (its ``a[i:] = [x]`` written
    without the new list)."""
    cdef Py_ssize_t n = len(a), i = start, j
    cdef double y, hi, lo
    for j in range(start, n):
        y = a[j]
        if fabs(x) < fabs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            a[i] = lo
            i += 1
        x = hi
    if i < n:
        a[i] = x
        if i + 1 < n:
            del a[i + 1 :]
    else:
        a.append(x)
    if i - start >= _KEEP:
        _renorm(a, start)
    return 0


cdef int _grow_all(list d, Py_ssize_t start, list s, Py_ssize_t sstart, bint minus) except -1:
    """Grow the partials ``d[start:]`` by every partial of ``s[sstart:]`` (negated with ``minus``)."""
    cdef Py_ssize_t j
    cdef double x
    for j in range(sstart, len(s)):
        x = s[j]
        _grow(d, start, -x if minus else x)
    return 0


cdef int _var_add(list a, double x) except -1:
    """aggregations.Var.add (the square split exactly, as aggregations._square)."""
    cdef double h2, l2, c2, xh, xl
    a[0] = <long long>a[0] + 1
    if -1e150 < x < 1e150:
        h2 = x * x
        c2 = 134217729.0 * x
        xh = c2 - (c2 - x)
        xl = x - xh
        l2 = ((xh * xh - h2) + 2.0 * xh * xl) + xl * xl
    else:
        h2, l2 = _square(x)
    _grow(<list?>a[1], 0, x)
    _grow(<list?>a[2], 0, h2)
    if l2 != 0.0:
        _grow(<list?>a[2], 0, l2)
    return 0


cdef inline bint _better_min(object x, object held):
    return held is None or x < held or (x == held and type(x) is float)


cdef inline bint _better_max(object x, object held):
    return held is None or x > held or (x == held and type(x) is float)


cdef int _add(_Agg g, object acc, object v, long long t, long long seq) except -1:
    """compiled.add_lines: the event (value ``v``, time ``t``, sequence ``seq``) added to ``acc`` (a list for
    the built-in kinds; any object for another aggregation, called through its methods)."""
    cdef int kind = g.kind
    cdef object x
    cdef list a
    if kind == OTHER:
        g.add(acc, t, seq, v)
        return 0
    a = acc
    if kind == COUNT:
        a[0] = <long long>a[0] + 1
    elif kind == COUNT_FIELD:
        if v is not None:
            a[0] = <long long>a[0] + 1
    elif kind == SUM:
        x = _number(v)
        if x is not None:
            _grow(a, 0, <double>x)
    elif kind == MEAN:
        x = _number(v)
        if x is not None:
            a[0] = <long long>a[0] + 1
            _grow(a, 1, <double>x)
    elif kind == MIN:
        x = _picked(v)
        if x is not None and _better_min(x, a[0]):
            a[0] = x
    elif kind == MAX:
        x = _picked(v)
        if x is not None and _better_max(x, a[0]):
            a[0] = x
    elif kind == LAST:
        if v is not None:
            x = a[0]
            if x is None or t > <long long>x or (t == <long long>x and seq > <long long>a[1]):
                a[0] = t
                a[1] = seq
                a[2] = v
    elif kind == SINCE:
        x = a[0]
        if x is None or t > <long long>x:
            a[0] = t
    elif kind == VAR:
        x = _number(v)
        if x is not None:
            _var_add(a, <double>x)
    return 0


cdef int _merge(_Agg g, object d_, object s_, bint minus) except -1:
    """compiled.merge_lines: the accumulator ``s_`` merged into ``d_`` (``minus``, invertible kinds only:
    taken out)."""
    cdef int kind = g.kind
    cdef object y
    cdef long long n
    cdef list d, s
    if kind == OTHER:
        if minus:
            raise TypeError("a window with an aggregation that is not INVERTIBLE cannot take a tile out")
        g.merge(d_, s_)
        return 0
    d = d_
    s = s_
    if kind == COUNT or kind == COUNT_FIELD:
        n = s[0]
        d[0] = <long long>d[0] - n if minus else <long long>d[0] + n
    elif kind == SUM:
        _grow_all(d, 0, s, 0, minus)
    elif kind == MEAN:
        n = s[0]
        d[0] = <long long>d[0] - n if minus else <long long>d[0] + n
        _grow_all(d, 1, s, 1, minus)
    elif kind == MIN:
        y = s[0]
        if y is not None and _better_min(y, d[0]):
            d[0] = y
    elif kind == MAX:
        y = s[0]
        if y is not None and _better_max(y, d[0]):
            d[0] = y
    elif kind == LAST:
        y = s[0]
        if y is not None and (
            d[0] is None or y > d[0] or (y == d[0] and s[1] > d[1])
        ):
            d[0] = y
            d[1] = s[1]
            d[2] = s[2]
    elif kind == SINCE:
        y = s[0]
        if y is not None and (d[0] is None or y > d[0]):
            d[0] = y
    elif kind == VAR:
        n = s[0]
        if n:
            d[0] = <long long>d[0] - n if minus else <long long>d[0] + n
            _var_merge_sums(<list?>d[1], <list?>s[1], minus)
            _var_merge_sums(<list?>d[2], <list?>s[2], minus)
    return 0


cdef int _var_merge_sums(list p, list s, bint minus) except -1:
    cdef Py_ssize_t j
    cdef double x
    for j in range(len(s)):
        x = s[j]
        if x != 0.0:
            _grow(p, 0, -x if minus else x)
    return 0


cdef object _value(_Agg g, object acc, long long t):
    """compiled.value_expr: the aggregate's value at reference time ``t``."""
    cdef int kind = g.kind
    cdef object x
    cdef long long n, last
    cdef list a
    if kind == VAR:
        return _var_value(g, acc, t)
    if kind == OTHER:
        return g.value(acc, t)
    a = acc
    if kind == COUNT or kind == COUNT_FIELD or kind == MIN or kind == MAX:
        return a[0]
    if kind == SUM:
        if len(a) == 1:
            return <double>a[0] + 0.0
        return _fsum(a)
    if kind == MEAN:
        n = a[0]
        if not n:
            return None
        if len(a) == 2:
            return (<double>a[1] + 0.0) / <double>n
        return <double>_fsum(a[1:]) / <double>n
    if kind == LAST:
        return a[2]
    if kind == SINCE:
        x = a[0]
        if x is None:
            return None
        last = x
        if t <= last:
            return 0
        if last < 0 and t > last + _MAX_LL:  # past int64 (a hand-built time): Python's integers
            return <object>t - x
        return t - last
    return g.value(a, t)  # not reached


cdef inline long long _k(object tile) except? -1:
    """A tile's index: its first item (a list of at least one item, or TypeError)."""
    if type(tile) is list and PyList_GET_SIZE(tile):
        return <long long><object>PyList_GET_ITEM(tile, 0)
    return _not_tile()


cdef long long _not_tile() except? -1:
    raise TypeError("a tile is not a non-empty list")


cdef Py_ssize_t _bisect_left(list T, long long x, Py_ssize_t lo, Py_ssize_t hi) except -1:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) // 2
        if _k(T[mid]) < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef Py_ssize_t _bisect_right(list T, long long x, Py_ssize_t lo, Py_ssize_t hi) except -1:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) // 2
        if x < _k(T[mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline object _get(object mapping, object key):
    """``mapping.get(key)`` (a dict's read without the method call)."""
    cdef PyObject *v
    if type(mapping) is dict:
        v = PyDict_GetItem(mapping, key)
        return None if v is NULL else <object>v
    return mapping.get(key)


cdef int _set_bounds(dict sb, tuple bounded, Py_ssize_t *bidx, double *bnew, Py_ssize_t nb) except -1:
    """The bounded fields' new magnitudes into the state's ``bounds``: ``sb[f] = [a, q]``, written into the
    list already there when nothing but ``sb`` holds it (the same contents; nobody can tell)."""
    cdef Py_ssize_t m
    cdef PyObject *held
    cdef list pair
    for m in range(nb):
        f = (<tuple>bounded[bidx[m]])[1]
        held = PyDict_GetItem(sb, f)
        if held is not NULL and type(<object>held) is list and _refs(held) == 1:
            pair = <list>held
            if PyList_GET_SIZE(pair) == 2:
                pair[0] = bnew[2 * m]
                pair[1] = bnew[2 * m + 1]
                continue
        sb[f] = [bnew[2 * m], bnew[2 * m + 1]]
    return 0


cdef int _spare(_Win w, list T, Py_ssize_t p) except -1:
    """Keep the expiring tiles ``T[:p]`` that nothing but ``T`` holds (nor their accumulators) as the
    window's spare tiles, emptied: ``_new_tile`` takes one instead of making one. Counted references make
    this safe: an object nobody else holds cannot be seen changing."""
    cdef Py_ssize_t q, j
    cdef PyObject *tile
    cdef PyObject *a
    cdef _Agg g
    for q in range(p):
        if PyList_GET_SIZE(w.spare) >= _SPARE:
            return 0
        tile = PyList_GET_ITEM(T, q)
        if type(<object>tile) is not list or _refs(tile) != 1 or PyList_GET_SIZE(<list>tile) != w.n + 1:
            continue
        for j in range(w.n):
            a = PyList_GET_ITEM(<list>tile, j + 1)
            if type(<object>a) is not list or _refs(a) != 1:
                break
        else:
            for j in range(w.n):
                g = <_Agg>w.aggs[j]
                a = PyList_GET_ITEM(<list>tile, j + 1)
                PyList_SetSlice(<list>a, 0, PyList_GET_SIZE(<list>a), g.blank)
            w.spare.append(<object>tile)
    return 0


cdef list _running(list c, Py_ssize_t n):
    """``n`` accumulators ``[v]`` for the min/max range ``c`` (its values then written anew): its previous
    ones, ``c[2]``, when nothing but ``c`` holds them (counted references, as ``_spare``), else new lists."""
    cdef Py_ssize_t j
    cdef PyObject *held
    cdef PyObject *a
    if PyList_GET_SIZE(c) > 2:
        held = PyList_GET_ITEM(c, 2)
        if type(<object>held) is list and _refs(held) == 1 and PyList_GET_SIZE(<list>held) == n:
            for j in range(n):
                a = PyList_GET_ITEM(<list>held, j)
                if type(<object>a) is not list or _refs(a) != 1 or PyList_GET_SIZE(<list>a) != 1:
                    break
            else:
                return <list>held
    return [[None] for j in range(n)]


cdef list _new_tile(_Win w, long long k):
    """A new empty tile ``[k, accs...]`` (compiled.Compiled.new): a spare one (see ``_spare``) when there
    is one."""
    cdef list tile
    cdef _Agg g
    cdef Py_ssize_t i
    if PyList_GET_SIZE(w.spare):
        tile = w.spare.pop()
        tile[0] = k
        return tile
    tile = [k]
    for i in range(w.n):
        g = <_Agg?>w.aggs[i]
        tile.append((<list?>g.blank).copy() if g.literal else g.empty())
    return tile


cdef int _merge_tile(_Win w, list accs, list tile, bint minus) except -1:
    cdef Py_ssize_t i
    for i in range(w.n):
        _merge(<_Agg?>w.aggs[i], accs[i], tile[i + 1], minus)
    return 0


cdef inline bint _beaten(object h, object v, bint top):
    """tiles._beaten: a later tile's ``v`` makes ``h`` useless to the max (``top``) or min queue."""
    if top:
        if h < v:
            return True
    elif h > v:
        return True
    return h == v and (type(v) is float or type(h) is not float)


cdef class Step:
    """The compiled in-order ``apply(state, event, check=None)`` of one engine's view (module docstring);
    events out of order go to ``generic``."""

    cdef object generic, key, view_name, safe, check_none
    cdef tuple wins, inputs, from_fields, derived, expressions, bounded
    cdef bint include_fields, plain, rekeyed, has_bounds, busy
    cdef readonly bint mirrorable  # states held in C between events (hold=True and a view it can hold)
    cdef Py_ssize_t n_inputs, n_out, n_settled
    cdef list ins, accs, Ts  # the buffers of a call (apply)

    def __init__(self, engine, generic, safe, hold=True):
        from features.compiled import literal

        cdef _Win w
        cdef _Agg g
        view = engine.view
        layout = engine.layout
        self.generic = generic
        self.key = engine.key
        self.view_name = view.name
        self.safe = safe
        self.inputs = tuple(layout.inputs)
        self.n_inputs = len(self.inputs)
        self.n_out = len(view.aggregations) + len(view.derived) + len(view.expressions)
        self.ins, self.accs, self.Ts, self.busy = [None] * self.n_inputs, [], [], False
        derived = {d.name for d in view.derived}
        self.from_fields = tuple(not view.include_fields and f not in derived for f in self.inputs)
        index = {f: j for j, f in enumerate(self.inputs)}
        self.derived = tuple((d.name, d.fn) for d in view.derived)
        self.expressions = tuple((e.name, e.fn) for e in view.expressions)
        self.include_fields = view.include_fields
        self.plain = not view.derived and not view.include_fields
        self.rekeyed = view.rekeyed
        self.bounded = tuple(
            (index[f], f, by_sum, by_square) for f, (by_sum, by_square) in layout.bounded.items()
        )
        self.has_bounds = bool(self.bounded)
        kinds = {A.Count: COUNT, A.Sum: SUM, A.Mean: MEAN, A.Min: MIN, A.Max: MAX, A.Last: LAST,
                 A.SinceLast: SINCE, A.Var: VAR, A.Std: VAR}
        domain = (A.Count, A.Min, A.Max, A.Last, A.SinceLast)
        wins = []
        for tw in layout.tiled:
            w = _Win()
            w.tw, w.key, w.picks = tw, tw.key, tuple(tw.picks)
            w.kind = {"lifetime": LIFETIME, "hopping": HOPPING}.get(tw.kind, SLIDING)
            w.mode = SLIDE if tw.code.invertible else (SELECT if tw.picks else MOVE)
            w.r, w.span, w.expiry, w.lateness = tw.resolution, tw.span, tw.expiry, tw.lateness
            w.size = tw.window.size_ms if tw.kind == "hopping" else 0
            w.step = tw.window.step_ms if tw.kind == "hopping" else 1
            aggs = []
            for a in tw.aggs:
                g = _Agg()
                g.kind = kinds.get(type(a), OTHER)
                if g.kind == COUNT and a.field is not None:
                    g.kind = COUNT_FIELD
                g.inp = index[a.field] if a.field is not None else -1
                g.domain = type(a) in domain
                g.root = type(a) is A.Std
                g.name, g.add, g.merge, g.value, g.empty = a.name, a.add, a.merge, a.value, a.empty
                g.copy = a.copy
                g.blank = a.empty()
                # a flat list copied for a new tile; any other empty accumulator (a dict, a tuple) made anew
                g.literal = type(g.blank) is list and literal(g.blank)
                g.bad = f"aggregate {a.name!r} is not finite"
                aggs.append(g)
            w.aggs = tuple(aggs)
            w.n = len(aggs)
            w.recycle = True
            for g in aggs:
                w.recycle = w.recycle and g.literal
            w.spare = []
            wins.append(w)
        self.wins = tuple(wins)
        # states held in C between events (_native_mirror.pxi): every window but the lifetime one moves its
        # range by taking tiles out or by queues, with built-in aggregations only
        self.n_settled = len(layout.lifetime)
        self.mirrorable = bool(hold) and len(self.bounded) <= _MAX_BOUNDED
        for w in wins:
            if w.kind != LIFETIME and (w.mode == MOVE or any((<_Agg>g).kind == OTHER for g in w.aggs)):
                self.mirrorable = False

    def apply(self, state, event, check=None):
        cdef long long t = event.ts
        cdef object wm = state.watermark
        cdef list ins, accs, Ts
        if wm is not None and t < <long long>wm:
            return self.generic(state, event, check)
        if self.mirrorable and not state.unheld:
            m = state.native
            if type(m) is not _Mirror or (<_Mirror>m).step is not self or not _left(<_Mirror>m, wm):
                m = _take_up(self, state)
            if m is not None:
                if self.busy:
                    return self._held(state, <_Mirror>m, event, check, t, wm, [None] * self.n_inputs)
                self.busy = True
                try:
                    return self._held(state, <_Mirror>m, event, check, t, wm, self.ins)
                finally:
                    self.busy = False
        # the buffers of one call (reused, so that an event allocates none; a call made from inside one,
        # through a derived field, an expression or ``check``, has its own)
        if self.busy:
            return self._apply(state, event, check, t, wm, [None] * self.n_inputs, [], [])
        self.busy = True
        ins, accs, Ts = self.ins, self.accs, self.Ts
        try:
            return self._apply(state, event, check, t, wm, ins, accs, Ts)
        finally:
            del accs[:]
            del Ts[:]
            self.busy = False

    cdef dict _apply(self, object state, object event, object check, long long t, object wm, list ins,
                     list accs, list Ts, dict own=None):
        """``apply`` for an event in order, with its buffers: ``ins`` (the inputs' values, one slot each)
        and ``accs`` and ``Ts`` (empty: each window's range and tiles); ``own``: the event's own part of its
        vector, made already (by the held path, whose derived fields wrote the state back: ``_held``)."""
        cdef double bstack[2 * _MAX_BOUNDED]
        cdef Py_ssize_t istack[_MAX_BOUNDED]
        cdef double *bnew = bstack
        cdef Py_ssize_t *bidx = istack
        if len(self.bounded) > _MAX_BOUNDED:  # the magnitudes on the heap
            bnew = <double *>PyMem_Malloc(len(self.bounded) * 2 * sizeof(double))
            bidx = <Py_ssize_t *>PyMem_Malloc(len(self.bounded) * sizeof(Py_ssize_t))
            if bnew is NULL or bidx is NULL:
                PyMem_Free(bnew)
                PyMem_Free(bidx)
                raise MemoryError()
            try:
                return self._event(state, event, check, t, wm, ins, accs, Ts, bnew, bidx, own)
            finally:
                PyMem_Free(bnew)
                PyMem_Free(bidx)
        return self._event(state, event, check, t, wm, ins, accs, Ts, bnew, bidx, own)

    cdef dict _own(self, object event, list ins):
        """The event's own part of its vector (FeatureEngine.own), and each input's value into ``ins``."""
        cdef object full, fields
        cdef dict vector
        cdef Py_ssize_t j
        fields = event.fields
        if self.plain:
            full = fields
            vector = _presized(self.n_out)
        else:
            full = dict(fields)
            for name, fn in self.derived:
                full[name] = self.safe(fn, full)
            if self.include_fields:
                vector = full
            else:
                vector = _presized(self.n_out)
                for name, fn in self.derived:
                    vector[name] = full[name]
        # each input where the generic path reads it (fused.Fused: the fields and derived ones, or a derived
        # field's value or the event's own field when the view leaves the fields out)
        for j in range(self.n_inputs):
            ins[j] = _get(fields if self.from_fields[j] else full, self.inputs[j])
        return vector

    # its length: the generated function's (features.fused), of which it is the compiled twin
    cdef dict _event(self, object state, object event, object check, long long t, object wm, list ins,
                     list accs, list Ts, double *bnew, Py_ssize_t *bidx, dict own):
        """``_apply`` with room for the bounded fields' magnitudes (``bnew``: two each, ``bidx``: which)."""
        cdef object v, pair_
        cdef dict vector, sb
        cdef Py_ssize_t i, j, nb = 0
        cdef double xv, a_, qq
        vector = self._own(event, ins) if own is None else own
        # the bounded fields' new magnitudes (FeatureEngine._bounds)
        if self.has_bounds:
            sb = state.bounds or {}
            for i in range(len(self.bounded)):
                j, f, by_sum, by_square = self.bounded[i]
                v = ins[j]
                if type(v) is str or v is None or not v:
                    continue
                if type(v) is float or type(v) is int or type(v) is bool:
                    xv = v  # float(v): an int or a bool (not 0) as a double
                else:  # what float(v) makes of anything else (an event built without validation)
                    xv = _float(v)
                pair_ = sb.get(f)
                if pair_:
                    a_ = <double>pair_[0] + fabs(xv)
                    qq = <double>pair_[1] + xv * xv
                else:
                    a_ = 0.0 + fabs(xv)
                    qq = 0.0 + xv * xv
                if by_sum and not a_ <= _LIMIT:
                    raise AggregateOverflow(self.view_name, self.key(event) or "", f, "sum of magnitudes")
                if by_square and not 4.0 * qq <= _LIMIT:
                    raise AggregateOverflow(self.view_name, self.key(event) or "", f, "sum of squares")
                bidx[nb] = i
                bnew[2 * nb] = a_ if a_ <= _LIMIT else _LIMIT
                bnew[2 * nb + 1] = qq if qq <= _LIMIT else _LIMIT
                nb += 1
        # every window's range at t (its cache moved) and its aggregates
        self._read(state, t, vector, accs, Ts, True)
        for name, fn in self.expressions:
            vector[name] = self.safe(fn, vector)
        if check is not None:
            check(vector)
        # nothing below can fail
        self._commit(state, event, t, wm, ins, accs, Ts, bnew, bidx, nb)
        return vector

    cdef int _commit(self, object state, object event, long long t, object wm, list ins, list accs, list Ts,
                     double *bnew, Py_ssize_t *bidx, Py_ssize_t nb) except -1:
        """``_event``'s changes to the state's lists, once everything that can fail has run: the bounded
        fields' magnitudes (``bnew``, ``bidx``, ``nb``), seq, the event added to its tile of every window
        (``Ts``: their tiles) and to the cached ranges (``accs``, or None where the cache is empty), the ids,
        the watermark and the tiles expired."""
        cdef long long k, cut, seq
        cdef object v
        cdef dict settled
        cdef list T, A_, tile, s_
        cdef _Win w
        cdef _Agg g
        cdef Py_ssize_t i, j, p, n, nw = len(self.wins)
        if nb:
            if state.bounds is None:
                state.bounds = {}
            _set_bounds(state.bounds, self.bounded, bidx, bnew, nb)
        seq = <long long>state.seq + 1
        state.seq = seq
        for i in range(nw):
            w = <_Win?>self.wins[i]
            T = Ts[i]
            k = t // w.r
            n = len(T)
            if n and _k(T[n - 1]) == k:
                tile = T[n - 1]
            elif not n or _k(T[n - 1]) < k:
                tile = _new_tile(w, k)
                T.append(tile)
            else:
                tile = w.tw.tile(T, k)
            A_ = accs[i] if accs is not None else None  # in order, the range ends with the event's tile
            for j in range(w.n):
                g = <_Agg?>w.aggs[j]
                v = ins[g.inp] if g.inp >= 0 else None
                _add(g, tile[j + 1], v, t, seq)
                if A_ is not None:
                    _add(g, A_[j], v, t, seq)
        if self.rekeyed:
            ids = state.ids
            ids.append(_id_hash(event.event_id))
            if len(ids) > _MAX_IDS:
                del ids[: len(ids) - _MAX_IDS]
        if wm is None or t > <long long>wm:
            state.watermark = t
            settled = state.settled
            for i in range(nw):
                w = <_Win?>self.wins[i]
                T = Ts[i]
                n = len(T)
                if n and t >= _k(T[0]) * w.r + w.expiry:  # the oldest tile expired
                    if w.kind == HOPPING:
                        cut = (t - w.lateness - w.size) // w.step + 1
                    else:
                        cut = (t - w.lateness) // w.r - w.span
                    p = 0
                    while p < n and _k(T[p]) < cut:
                        if w.kind == LIFETIME:
                            s_ = T[p]
                            for j in range(w.n):
                                g = <_Agg?>w.aggs[j]
                                _merge(g, settled[g.name], s_[j + 1], False)
                        p += 1
                    if w.recycle:
                        _spare(w, T, p)
                    _del_slice(T, 0, p, NULL)  # del T[:p]
        return 0

    def online(self, state):
        """FeatureEngine.online: the entity's aggregates as of its watermark (the cached ranges moved)."""
        cdef dict out = {}
        wm = state.watermark
        m = state.native
        if type(m) is _Mirror and (<_Mirror>m).step is self and _left(<_Mirror>m, wm):
            (<_Mirror>m).gen += 1  # its cached ranges moved (an apply this is called from cannot add to them)
            self._held_read(<_Mirror>m, wm if wm is not None else 0, out, False)
            return out
        self._read(state, wm if wm is not None else 0, out, None, None, False)
        return out

    cdef dict _held(self, object state, _Mirror m, object event, object check, long long t, object wm,
                    list ins):
        """``_event`` on a state held in C (_native_mirror.pxi): the same vector, the same state."""
        cdef double bnew[2 * _MAX_BOUNDED]
        cdef Py_ssize_t bidx[_MAX_BOUNDED]
        cdef long long k, cut, seq
        cdef object v, f
        cdef dict vector
        cdef _Held h
        cdef _Win w
        cdef _Agg g
        cdef Acc *tile
        cdef Py_ssize_t i, j, nw = len(m.held), nb = 0
        cdef double xv, a_, qq
        cdef unsigned long long gen = m.gen
        cdef object seq0 = state.seq, tiles, x
        cdef list Ts
        vector = self._own(event, ins)
        if not _kept(state, m, gen, seq0, wm):  # a derived field changed the state: the list path's turn
            return self._apply(state, event, check, t, wm, ins, [], [], vector)
        if self.has_bounds:
            for i in range(len(self.bounded)):
                j, f, by_sum, by_square = self.bounded[i]
                v = ins[j]
                if type(v) is str or v is None or not v:
                    continue
                if type(v) is float or type(v) is int or type(v) is bool:
                    xv = v
                else:
                    xv = _float(v)
                if m.bp[i]:
                    a_ = m.ba[i] + fabs(xv)
                    qq = m.bq[i] + xv * xv
                else:
                    a_ = 0.0 + fabs(xv)
                    qq = 0.0 + xv * xv
                if by_sum and not a_ <= _LIMIT:
                    raise AggregateOverflow(self.view_name, self.key(event) or "", f, "sum of magnitudes")
                if by_square and not 4.0 * qq <= _LIMIT:
                    raise AggregateOverflow(self.view_name, self.key(event) or "", f, "sum of squares")
                bidx[nb] = i
                bnew[2 * nb] = a_ if a_ <= _LIMIT else _LIMIT
                bnew[2 * nb + 1] = qq if qq <= _LIMIT else _LIMIT
                nb += 1
        self._held_read(m, t, vector, True)
        for name, fn in self.expressions:
            vector[name] = self.safe(fn, vector)
        if check is not None:
            check(vector)
        if not _kept(state, m, gen, seq0, wm):  # an expression or check changed the state: on its lists
            if state.native is not None:
                state.release()
            state.cache = {}  # the ranges the list path would have moved are not made: none
            tiles = state.tiles
            Ts = [tiles[(<_Win>x).key] for x in self.wins]
            self._commit(state, event, t, wm, ins, None, Ts, bnew, bidx, nb)
            return vector
        # nothing below can fail (but memory)
        m.gen += 1
        for j in range(nb):
            i = bidx[j]
            if not m.bp[i]:  # the field's first magnitudes: its key in bounds now, as the list path
                if m.bounds is None:
                    m.bounds = {}
                f = (<tuple>self.bounded[i])[1]
                if not m.bounds.get(f):
                    m.bounds[f] = None  # the key's place (export writes the values)
                m.bp[i] = True
            m.ba[i] = bnew[2 * j]
            m.bq[i] = bnew[2 * j + 1]
        seq = <long long>state.seq + 1
        state.seq = seq
        for i in range(nw):
            h = <_Held>m.held[i]
            w = h.w
            k = t // w.r
            if h.count and h.k(h.count - 1) == k:
                tile = h.tile(h.count - 1)
            elif not h.count or h.k(h.count - 1) < k:
                tile = h.push(k)
            else:  # not reached: an event in order is in the last tile or after it (_take_up checks)
                raise RuntimeError("a held window's tile after the watermark")
            for j in range(h.n):
                g = <_Agg>w.aggs[j]
                v = ins[g.inp] if g.inp >= 0 else None
                _acc_add(g, &tile[j], v, t, seq)
                _acc_add(g, &h.run[j], v, t, seq)
        if self.rekeyed:
            ids = state.ids
            ids.append(_id_hash(event.event_id))
            if len(ids) > _MAX_IDS:
                del ids[: len(ids) - _MAX_IDS]
        if wm is None or t > <long long>wm:
            state.watermark = m.wm = t
            for i in range(nw):
                h = <_Held>m.held[i]
                w = h.w
                if h.count and t >= h.k(0) * w.r + w.expiry:  # the oldest tile expired
                    if w.kind == HOPPING:
                        cut = (t - w.lateness - w.size) // w.step + 1
                    else:
                        cut = (t - w.lateness) // w.r - w.span
                    while h.count and h.k(0) < cut:
                        if w.kind == LIFETIME:
                            tile = h.tile(0)
                            for j in range(h.n):
                                _acc_merge(<_Agg>w.aggs[j], &h.settled[j], &tile[j], False)
                        h.pop()
        return vector

    cdef int _held_read(self, _Mirror m, long long t, dict vector, bint finite) except -1:
        """``_read`` on a held state: every window's range at ``t`` and its aggregates into ``vector``."""
        cdef _Held h
        cdef _Win w
        cdef _Agg g
        cdef Py_ssize_t i, j
        cdef long long k, lo
        cdef object x
        for i in range(len(m.held)):
            h = <_Held>m.held[i]
            w = h.w
            if w.kind != LIFETIME:
                k = t // w.r
                lo = (t - w.size) // w.step + 1 if w.kind == HOPPING else k - w.span
                if not h.valid or h.lo != lo or h.hi != k:
                    h.move(lo, k)
            for j in range(h.n):
                g = <_Agg>w.aggs[j]
                x = _acc_value(g, &h.run[j], t)
                if finite and not g.domain and type(x) is float and (<double>x - <double>x) != 0.0:
                    raise ArithmeticError(g.bad)
                vector[g.name] = x
        return 0

    cdef int _read(self, object state, long long t, dict vector, list accs, list Ts, bint finite) except -1:
        """Every window's range at ``t`` (its cache moved forward, or rebuilt) and its aggregates into
        ``vector``; each window's accumulators and tiles appended to ``accs`` and ``Ts`` unless None;
        ``finite``: the generic path's last safeguard (ArithmeticError for an aggregate not finite)."""
        cdef dict cache = state.cache, tiles = state.tiles
        cdef list T, c, A_
        cdef _Win w
        cdef _Agg g
        cdef Py_ssize_t i, j, n
        cdef long long k, lo
        cdef object x
        for i in range(len(self.wins)):
            w = <_Win?>self.wins[i]
            T = tiles[w.key]
            k = t // w.r
            n = len(T)
            c = cache.get(w.key)
            if w.kind == LIFETIME:
                if c is None or (n and k < _k(T[n - 1])):
                    c = [None, None, w.tw.merged(T, None, k, state.settled)]
                    cache[w.key] = c
            else:
                if w.kind == HOPPING:
                    lo = (t - w.size) // w.step + 1
                else:
                    lo = k - w.span
                if c is None or <long long>c[0] != lo or <long long>c[1] != k:
                    c = self._move(w, c, cache, T, lo, k)
            A_ = c[2]
            if accs is not None:
                accs.append(A_)
                Ts.append(T)
            for j in range(w.n):
                g = <_Agg?>w.aggs[j]
                x = _value(g, A_[j], t)
                if finite and not g.domain and type(x) is float and (<double>x - <double>x) != 0.0:
                    raise ArithmeticError(g.bad)
                vector[g.name] = x
        return 0

    cdef list _move(self, _Win w, object c_obj, dict cache, list T, long long lo, long long k):
        """The cached range moved to ``[lo, k]`` (fused._Window.move / select)."""
        cdef list c, r_, s_, q_
        cdef Py_ssize_t n = len(T), p, j
        cdef long long c0, c1, m
        cdef object q, v, h
        cdef bint top
        if w.mode == SLIDE:
            if c_obj is None:
                c = [lo, k, w.tw.merged(T, lo, k)]
                cache[w.key] = c
                return c
            c = c_obj
            c0 = c[0]
            c1 = c[1]
            if lo < c0 or k < c1 or lo > c1:
                c = [lo, k, w.tw.merged(T, lo, k)]
                cache[w.key] = c
                return c
            if lo > c0 and n:  # the tiles of [c0, lo) leave the range
                p = 0 if _k(T[0]) >= c0 else _bisect_left(T, c0, 0, n)
                r_ = c[2]
                while p < n and _k(T[p]) < lo:
                    _merge_tile(w, r_, <list?>T[p], True)
                    p += 1
            if k > c1 and n and _k(T[n - 1]) > c1:  # the tiles of (c1, k] enter it
                p = _bisect_right(T, c1, 0, n)
                r_ = c[2]
                while p < n and _k(T[p]) <= k:
                    _merge_tile(w, r_, <list?>T[p], False)
                    p += 1
            c[0] = lo
            c[1] = k
            return c
        if w.mode == MOVE:
            c = w.tw.move(c_obj, T, lo, k)
            cache[w.key] = c
            return c
        # SELECT
        if c_obj is None:
            c = w.tw.select(c_obj, T, lo, k)
            cache[w.key] = c
            return c
        c = c_obj
        c0 = c[0]
        c1 = c[1]
        if lo < c0 or k < c1:
            c = w.tw.select(c, T, lo, k)
            cache[w.key] = c
            return c
        q_ = c[3]
        m = c1 if c1 > lo else lo
        if n and _k(T[n - 1]) >= m:
            p = n - 1 if n == 1 or _k(T[n - 2]) < m else _bisect_left(T, m, 0, n)
            while p < n and _k(T[p]) < k:  # the tiles that joined the range's earlier part
                s_ = T[p]
                for j in range(len(w.picks)):
                    top = w.picks[j]
                    q = q_[j]
                    v = (<list?>s_[j + 1])[0]
                    if v is not None:
                        while q and _beaten(q[-1][1], v, top):
                            q.pop()
                        q.append((s_[0], v))
                p += 1
        r_ = _running(c, len(w.picks))  # the range's accumulators, written anew
        for j in range(len(w.picks)):
            q = q_[j]
            while q and q[0][0] < lo:
                q.popleft()
            (<list>r_[j])[0] = q[0][1] if q else None
        if n and _k(T[n - 1]) == k:  # the current tile
            _merge_tile(w, r_, <list?>T[n - 1], False)
        c[0] = lo
        c[1] = k
        c[2] = r_
        return c


def grow(list a, Py_ssize_t start, double x):
    """The compiled :func:`features.summaries.grow` (what the step runs), for the tests to hold it to the
    Python one."""
    _grow(a, start, x)


include "_native_mirror.pxi"
