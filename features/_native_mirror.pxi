# Included by features/_native.pyx: an entity's state held in C between events (``EntityState.native``).
#
# The lists of features.state are the state's meaning; this is the same state laid out for the step: per
# window, its tiles' indices and accumulators in two arrays (oldest first), the cached range's accumulators,
# a min/max window's monotonic queues, the settled accumulators of the lifetime window, and the bounded
# fields' magnitudes as doubles. Counts, event times and sequence numbers are C integers, the exact sums'
# partials C doubles (a few inline, more on the heap); a min, max or last value, and the accumulator of any
# aggregation that is not a built-in class (a distinct count, a subclass), stay Python objects.
#
# Every operation is the list path's, in the same order, on the same doubles: ``_part_grow`` is ``_grow``,
# ``_acc_add`` is ``_add``, ``_acc_merge`` is ``_merge``, a value is ``_value``'s; the lists written back
# (``_acc_list``) are the lists the step would have left (tests/features/test_native_mirror.py holds the two
# side by side, and test_fused.py the three paths). The cached ranges are not stored: written back, the
# state's cache is empty, and the Python paths rebuild it (a range's value is exact, whatever its partials).
#
# A state is taken up (``_Mirror`` built from its lists) at the first event in order a step applies to it,
# and given back (``release``) when Python reads its lists (EntityState's properties), when an event out of
# order comes (the generic path applies it to the lists), when another step takes it up, or when its
# watermark is not the one the step left (set by hand: taken up anew). A state whose lists are not what the
# step's views make (a hand-built one: the stored ones are checked), with a partial not finite, a tile before
# any event time, or counts or magnitudes that could take a range past MAX_COUNT or SUM_LIMIT (C integers
# and doubles would wrap or overflow where the list path's do not), is not taken up, then or later
# (``EntityState.unheld``): the list path applies its events, as before, its cache included (check_state
# refuses all of these in a stored state; tests/features/test_native_mirror.py hands them to both paths).

from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdlib cimport calloc, free, realloc
from cpython.list cimport PyList_New, PyList_SET_ITEM
from libc.string cimport memcpy, memmove, memset

cdef long long _MIN_K = -4611686018427387904  # -2**62: no tile's start time (k * r) nears int64's
cdef double _MAX_HELD_COUNT = 4611686018427387904.0  # 2**62 (features.summaries.MAX_COUNT)

cdef enum:
    _INL = 2  # partials held inline; more go to the heap
    _SCRATCH = _MSUM + 8


cdef struct Part:
    int n  # the number of partials (at least 1)
    int cap  # the heap's room (0: inline)
    double *heap
    double v[_INL]


cdef struct Acc:
    long long n  # COUNT, COUNT_FIELD, MEAN, VAR: the count; LAST, SINCE: the latest event time
    long long m  # LAST: its sequence number
    int has  # LAST, SINCE: an event time is held (else None)
    Part s  # SUM, MEAN, VAR: the partials of the sum
    Part q  # VAR: the partials of the sum of squares
    PyObject *o  # MIN, MAX, LAST: the value (NULL: None); OTHER: the accumulator (owned references)


cdef inline double *_pp(Part *p) noexcept nogil:
    return p.heap if p.heap != NULL else p.v


cdef inline void _part_free(Part *p) noexcept nogil:
    if p.heap != NULL:
        free(p.heap)
        p.heap = NULL
    p.cap = 0


cdef int _part_set(Part *p, const double *src, int n) except -1:
    """The partials ``src[:n]`` into ``p`` (its heap grown as needed)."""
    cdef double *h
    cdef int cap
    if n <= _INL:
        _part_free(p)
        memcpy(p.v, src, n * sizeof(double))
    else:
        if p.cap < n:
            cap = n if n > 8 else 8
            h = <double *>realloc(p.heap, cap * sizeof(double))
            if h == NULL:
                raise MemoryError()
            p.heap = h
            p.cap = cap
        memmove(p.heap, src, n * sizeof(double))
    p.n = n
    return 0


cdef int _part_copy(Part *d, Part *s) except -1:
    return _part_set(d, _pp(s), s.n)


cdef int _part_grow(Part *p, double x) except -1:
    """``_grow``: ``x`` added exactly to the partials (renormalised past ``KEEP_PARTIALS``)."""
    cdef double buf[_SCRATCH]
    cdef double out[_RN_IN]
    cdef double *a = _pp(p)
    cdef int n = p.n, i = 0, j, k
    cdef double y, hi, lo
    if n >= _SCRATCH - 1:
        return _part_python(p, x)
    for j in range(n):
        y = a[j]
        if fabs(x) < fabs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            buf[i] = lo
            i += 1
        x = hi
    buf[i] = x
    i += 1
    if i - 1 >= _KEEP:
        k = _renorm_arr(buf, i, out)
        if k < 0:  # the Python renormalise (an overflow the compiled one leaves to it)
            _part_set(p, buf, i)
            return _part_python(p, 0.0, True)
        if k == 0:
            buf[0] = 0.0
            i = 1
        else:
            for j in range(k):
                buf[j] = out[k - 1 - j]
            i = k
    return _part_set(p, buf, i)


cdef int _part_python(Part *p, double x, bint renorm_only=False) except -1:
    """The Python ``grow`` (or ``renormalise`` alone) on the partials as a list: what the compiled ones
    leave to it (features.summaries)."""
    cdef list a = _part_list(p)
    cdef Py_ssize_t j, n
    if renorm_only:
        _renormalise(a, 0)
    else:
        _grow(a, 0, x)
    n = len(a)
    cdef double *buf = <double *>PyMem_Malloc(n * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    try:
        for j in range(n):
            buf[j] = a[j]
        _part_set(p, buf, <int>n)
    finally:
        PyMem_Free(buf)
    return 0


cdef int _renorm_arr(const double *a, int n, double *out) noexcept:
    """``_renorm_c`` on an array: the totals renormalise keeps, largest first (their number), or -1 where
    it leaves them to the Python one."""
    cdef double p[_MSUM]
    cdef int np_ = 0, i, k = 0
    cdef double x, hi
    if n > _RN_IN:
        return -1
    for i in range(n):
        x = a[i]
        if not (x - x == 0.0):
            return -1
        np_ = _msum(p, np_, x)
        if np_ < 0:
            return -1
    while k <= _MAX_PARTIALS:
        hi = _fsum_total(p, np_)
        if hi == 0.0:
            break
        if k >= _RN_IN:
            return -1
        out[k] = hi
        k += 1
        np_ = _msum(p, np_, -hi)
        if np_ < 0:
            return -1
    return k


cdef list _part_list(Part *p):
    cdef double *a = _pp(p)
    cdef list out = PyList_New(p.n)
    cdef Py_ssize_t j
    cdef object x
    for j in range(p.n):
        x = a[j]
        Py_INCREF(x)
        PyList_SET_ITEM(out, j, x)
    return out


cdef object _part_sum(Part *p):
    """``math.fsum`` of the partials (a sum's value: one partial plus 0.0, as the list path)."""
    cdef double buf[_MSUM]
    cdef double *a = _pp(p)
    cdef int n = p.n, np_ = 0, i
    if n == 1:
        return a[0] + 0.0
    for i in range(n):
        np_ = _msum(buf, np_, a[i])
        if np_ < 0:
            return _fsum(_part_list(p))  # what math.fsum makes of it (its error)
    return _fsum_total(buf, np_)


cdef int _part_load(Part *p, object parts, Py_ssize_t start) except -1:
    """The partials ``parts[start:]``: 1 to MAX_PARTIALS exact floats (TypeError otherwise)."""
    cdef Py_ssize_t n, j
    cdef double buf[_MSUM]
    cdef object x
    if type(parts) is not list:
        raise TypeError("partials")
    n = PyList_GET_SIZE(parts) - start
    if n < 1 or n > _MAX_PARTIALS:
        raise TypeError("partials")
    for j in range(n):
        x = <object>PyList_GET_ITEM(parts, start + j)
        if type(x) is not float:
            raise TypeError("partials")
        buf[j] = x
        if not (buf[j] - buf[j] == 0.0):  # a NaN or an infinity: the list path keeps its own way with them
            raise TypeError("partials")
    return _part_set(p, buf, <int>n)


cdef double _part_size(Part *p) noexcept:
    """The sum of the partials' magnitudes."""
    cdef double *a = _pp(p)
    cdef double out = 0.0
    cdef int j
    for j in range(p.n):
        out += fabs(a[j])
    return out


cdef inline void _obj_set(PyObject **slot, object v) noexcept:
    """``*slot = v`` (owned; None as NULL)."""
    cdef PyObject *old = slot[0]
    if v is None:
        slot[0] = NULL
    else:
        Py_INCREF(v)
        slot[0] = <PyObject *>v
    Py_XDECREF(old)


cdef inline object _obj(PyObject *o):
    return None if o == NULL else <object>o


cdef inline void _acc_free(Acc *a) noexcept:
    _part_free(&a.s)
    _part_free(&a.q)
    Py_XDECREF(a.o)
    a.o = NULL


cdef int _acc_blank(_Agg g, Acc *a) except -1:
    """A new empty accumulator of ``g`` in ``a`` (its memory not yet owned: zeroed first)."""
    memset(a, 0, sizeof(Acc))
    a.s.n = 1
    a.q.n = 1
    if g.kind == OTHER:
        _obj_set(&a.o, g.empty())
    return 0


cdef int _acc_reset(_Agg g, Acc *a) except -1:
    """``a`` (owned) emptied."""
    _acc_free(a)
    return _acc_blank(g, a)


cdef int _acc_copy(_Agg g, Acc *d, Acc *s) except -1:
    """``d`` (zeroed or owned and freed) a copy of ``s``, sharing nothing mutable (``g.copy`` for OTHER)."""
    _acc_free(d)
    d.n = s.n
    d.m = s.m
    d.has = s.has
    d.s.n = 1
    d.q.n = 1
    _part_copy(&d.s, &s.s)
    _part_copy(&d.q, &s.q)
    if g.kind == OTHER:
        _obj_set(&d.o, g.copy(<object>s.o))
    else:
        _obj_set(&d.o, _obj(s.o))
    return 0


cdef int _acc_add(_Agg g, Acc *a, object v, long long t, long long seq) except -1:
    """``_add`` (compiled.add_lines) on ``a``."""
    cdef int kind = g.kind
    cdef object x
    cdef double h2, l2, c2, xh, xl, d
    if kind == COUNT:
        a.n += 1
    elif kind == COUNT_FIELD:
        if v is not None:
            a.n += 1
    elif kind == SUM:
        x = _number(v)
        if x is not None:
            _part_grow(&a.s, <double>x)
    elif kind == MEAN:
        x = _number(v)
        if x is not None:
            a.n += 1
            _part_grow(&a.s, <double>x)
    elif kind == MIN:
        x = _picked(v)
        if x is not None and _better_min(x, _obj(a.o)):
            _obj_set(&a.o, x)
    elif kind == MAX:
        x = _picked(v)
        if x is not None and _better_max(x, _obj(a.o)):
            _obj_set(&a.o, x)
    elif kind == LAST:
        if v is not None:
            if not a.has or t > a.n or (t == a.n and seq > a.m):
                a.n = t
                a.m = seq
                a.has = 1
                _obj_set(&a.o, v)
    elif kind == SINCE:
        if not a.has or t > a.n:
            a.n = t
            a.has = 1
    elif kind == VAR:
        x = _number(v)
        if x is not None:
            d = x
            a.n += 1
            if -1e150 < d < 1e150:
                h2 = d * d
                c2 = 134217729.0 * d
                xh = c2 - (c2 - d)
                xl = d - xh
                l2 = ((xh * xh - h2) + 2.0 * xh * xl) + xl * xl
            else:
                h2, l2 = _square(d)
            _part_grow(&a.s, d)
            _part_grow(&a.q, h2)
            if l2 != 0.0:
                _part_grow(&a.q, l2)
    else:
        g.add(<object>a.o, t, seq, v)
    return 0


cdef int _part_merge(Part *d, Part *s, bint minus, bint skip_zeros) except -1:
    """Every partial of ``s`` grown into ``d`` (negated with ``minus``; zeros skipped for the variance's
    sums, as ``_var_merge_sums``)."""
    cdef double buf[_MSUM]
    cdef int n = s.n, j
    cdef double x
    memcpy(buf, _pp(s), n * sizeof(double))  # s may be d's own (never: a range is not its tile)
    for j in range(n):
        x = buf[j]
        if skip_zeros and x == 0.0:
            continue
        _part_grow(d, -x if minus else x)
    return 0


cdef int _acc_merge(_Agg g, Acc *d, Acc *s, bint minus) except -1:
    """``_merge`` (compiled.merge_lines): ``s`` merged into ``d`` (``minus``: taken out)."""
    cdef int kind = g.kind
    if kind == COUNT or kind == COUNT_FIELD:
        d.n = d.n - s.n if minus else d.n + s.n
    elif kind == SUM:
        _part_merge(&d.s, &s.s, minus, False)
    elif kind == MEAN:
        d.n = d.n - s.n if minus else d.n + s.n
        _part_merge(&d.s, &s.s, minus, False)
    elif kind == MIN:
        if s.o != NULL and _better_min(<object>s.o, _obj(d.o)):
            _obj_set(&d.o, <object>s.o)
    elif kind == MAX:
        if s.o != NULL and _better_max(<object>s.o, _obj(d.o)):
            _obj_set(&d.o, <object>s.o)
    elif kind == LAST:
        if s.has and (not d.has or s.n > d.n or (s.n == d.n and s.m > d.m)):
            d.n = s.n
            d.m = s.m
            d.has = 1
            _obj_set(&d.o, _obj(s.o))
    elif kind == SINCE:
        if s.has and (not d.has or s.n > d.n):
            d.n = s.n
            d.has = 1
    elif kind == VAR:
        if s.n:
            d.n = d.n - s.n if minus else d.n + s.n
            _part_merge(&d.s, &s.s, minus, True)
            _part_merge(&d.q, &s.q, minus, True)
    else:
        if minus:
            raise TypeError("a window with an aggregation that is not INVERTIBLE cannot take a tile out")
        g.merge(<object>d.o, <object>s.o)
    return 0


cdef object _acc_value(_Agg g, Acc *a, long long t):
    """``_value`` (compiled.value_expr) of ``a`` at reference time ``t``."""
    cdef int kind = g.kind
    if kind == COUNT or kind == COUNT_FIELD:
        return a.n
    if kind == MIN or kind == MAX:
        return _obj(a.o)
    if kind == SUM:
        return _part_sum(&a.s)
    if kind == MEAN:
        if not a.n:
            return None
        if a.s.n == 1:
            return (_pp(&a.s)[0] + 0.0) / <double>a.n
        return <double>_part_sum(&a.s) / <double>a.n
    if kind == LAST:
        return _obj(a.o)
    if kind == SINCE:
        if not a.has:
            return None
        if t <= a.n:
            return 0
        if a.n < 0 and t > a.n + _MAX_LL:  # past int64 (a hand-built time): Python's integers
            return <object>t - <object>a.n
        return t - a.n
    if kind == VAR:
        return _var_value(g, _acc_list(g, a), t)
    return g.value(<object>a.o, t)


cdef object _acc_list(_Agg g, Acc *a):
    """The accumulator as the list path holds it (features.aggregations)."""
    cdef int kind = g.kind
    cdef list out
    if kind == COUNT or kind == COUNT_FIELD:
        return [a.n]
    if kind == SUM:
        return _part_list(&a.s)
    if kind == MEAN:
        out = _part_list(&a.s)
        out.insert(0, a.n)
        return out
    if kind == MIN or kind == MAX:
        return [_obj(a.o)]
    if kind == LAST:
        if not a.has:
            return [None, None, None]
        return [a.n, a.m, _obj(a.o)]
    if kind == SINCE:
        return [a.n if a.has else None]
    if kind == VAR:
        return [a.n, _part_list(&a.s), _part_list(&a.q)]
    return <object>a.o


cdef inline long long _int(object x) except? -1:
    if type(x) is not int:
        raise TypeError("not an int")
    return x


cdef int _acc_load(_Agg g, Acc *a, object acc) except -1:
    """``a`` (zeroed) from the list path's accumulator ``acc``; TypeError (or OverflowError) for one whose
    shape is not the aggregation's (``a`` then owns what it took: free it)."""
    cdef int kind = g.kind
    cdef list l
    cdef object v
    a.s.n = 1
    a.q.n = 1
    if kind == OTHER:
        _obj_set(&a.o, acc)
        return 0
    if type(acc) is not list:
        raise TypeError("accumulator")
    l = acc
    if kind == COUNT or kind == COUNT_FIELD:
        if len(l) != 1:
            raise TypeError("count")
        a.n = _int(l[0])
    elif kind == SUM:
        _part_load(&a.s, l, 0)
    elif kind == MEAN:
        if len(l) < 2:
            raise TypeError("mean")
        a.n = _int(l[0])
        _part_load(&a.s, l, 1)
    elif kind == MIN or kind == MAX:
        if len(l) != 1:
            raise TypeError("min/max")
        v = l[0]
        if not (v is None or type(v) is float or type(v) is int):
            raise TypeError("min/max")
        _obj_set(&a.o, v)
    elif kind == LAST:
        if len(l) != 3:
            raise TypeError("last")
        if l[0] is None:
            if l[1] is not None or l[2] is not None:
                raise TypeError("last")
        else:
            a.n = _int(l[0])
            a.m = _int(l[1])
            a.has = 1
            if l[2] is None:
                raise TypeError("last")
            _obj_set(&a.o, l[2])
    elif kind == SINCE:
        if len(l) != 1:
            raise TypeError("since")
        if l[0] is not None:
            a.n = _int(l[0])
            a.has = 1
    elif kind == VAR:
        if len(l) != 3:
            raise TypeError("var")
        a.n = _int(l[0])
        _part_load(&a.s, l[1], 0)
        _part_load(&a.q, l[2], 0)
    return 0


cdef class _Queue:
    """A min/max window's monotonic queue (tiles._beaten): the ``(k, value)`` of the range's tiles before
    the current one whose value no later tile beats, oldest first."""
    cdef long long *k
    cdef PyObject **v
    cdef Py_ssize_t head, count, cap

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.head, self.head + self.count):
            Py_XDECREF(self.v[i])
        free(self.k)
        free(self.v)

    cdef int clear(self) except -1:
        cdef Py_ssize_t i
        for i in range(self.head, self.head + self.count):
            Py_XDECREF(self.v[i])
        self.head = 0
        self.count = 0
        return 0

    cdef int push(self, long long k, object v, bint top) except -1:
        cdef long long *nk
        cdef PyObject **nv
        cdef Py_ssize_t cap
        while self.count and _beaten(<object>self.v[self.head + self.count - 1], v, top):
            self.count -= 1
            Py_XDECREF(self.v[self.head + self.count])
        if self.head + self.count == self.cap:
            if self.head:
                memmove(self.k, self.k + self.head, self.count * sizeof(long long))
                memmove(self.v, self.v + self.head, self.count * sizeof(PyObject *))
                self.head = 0
            else:
                cap = self.cap * 2 if self.cap else 8
                nk = <long long *>realloc(self.k, cap * sizeof(long long))
                if nk == NULL:
                    raise MemoryError()
                self.k = nk
                nv = <PyObject **>realloc(self.v, cap * sizeof(PyObject *))
                if nv == NULL:
                    raise MemoryError()
                self.v = nv
                self.cap = cap
        Py_INCREF(v)
        self.k[self.head + self.count] = k
        self.v[self.head + self.count] = <PyObject *>v
        self.count += 1
        return 0

    cdef object front(self, long long lo):
        """The first value of a tile at or after ``lo`` (those before dropped), or None."""
        while self.count and self.k[self.head] < lo:
            Py_XDECREF(self.v[self.head])
            self.head += 1
            self.count -= 1
        if not self.count:
            self.head = 0
            return None
        return <object>self.v[self.head]


cdef class _Held:
    """One window of a held state: its tiles (``ks`` and ``accs``, ``n`` accumulators each, positions
    ``head`` to ``head + count``), its cached range (``valid``: ``[lo, hi]``, accumulators ``run``), a
    min/max window's queues, and the lifetime window's settled accumulators."""
    cdef _Win w
    cdef long long *ks
    cdef Acc *accs
    cdef Py_ssize_t head, count, cap, n
    cdef bint valid
    cdef long long lo, hi
    cdef Acc *run
    cdef Acc *settled
    cdef tuple queues

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.accs != NULL:
            for i in range(self.head * self.n, (self.head + self.count) * self.n):
                _acc_free(&self.accs[i])
        if self.run != NULL:
            for i in range(self.n):
                _acc_free(&self.run[i])
        if self.settled != NULL:
            for i in range(self.n):
                _acc_free(&self.settled[i])
        free(self.ks)
        free(self.accs)
        free(self.run)
        free(self.settled)

    cdef inline long long k(self, Py_ssize_t i) noexcept:
        return self.ks[self.head + i]

    cdef inline Acc *tile(self, Py_ssize_t i) noexcept:
        return self.accs + (self.head + i) * self.n

    cdef Acc *push(self, long long k) except NULL:
        """A new empty tile ``k`` after the last."""
        cdef Py_ssize_t cap, j
        cdef long long *nk
        cdef Acc *na
        cdef Acc *t
        if self.head + self.count == self.cap:
            if self.head:
                memmove(self.ks, self.ks + self.head, self.count * sizeof(long long))
                memmove(self.accs, self.accs + self.head * self.n, self.count * self.n * sizeof(Acc))
                self.head = 0
            else:
                cap = self.cap * 2 if self.cap else 4
                nk = <long long *>realloc(self.ks, cap * sizeof(long long))
                if nk == NULL:
                    raise MemoryError()
                self.ks = nk
                na = <Acc *>realloc(self.accs, cap * self.n * sizeof(Acc))
                if na == NULL:
                    raise MemoryError()
                self.accs = na
                self.cap = cap
        self.ks[self.head + self.count] = k
        t = self.accs + (self.head + self.count) * self.n
        for j in range(self.n):
            memset(&t[j], 0, sizeof(Acc))
        self.count += 1
        for j in range(self.n):
            _acc_blank(<_Agg>self.w.aggs[j], &t[j])
        return t

    cdef int pop(self) except -1:
        """The oldest tile dropped."""
        cdef Acc *t = self.tile(0)
        cdef Py_ssize_t j
        for j in range(self.n):
            _acc_free(&t[j])
        self.head += 1
        self.count -= 1
        if not self.count:
            self.head = 0
        return 0

    cdef Py_ssize_t left(self, long long x) noexcept:
        """The first tile with index >= ``x`` (bisect_left)."""
        cdef Py_ssize_t lo = 0, hi = self.count, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if self.k(mid) < x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int rebuild(self, long long lo, long long hi) except -1:
        """The cached range ``[lo, hi]`` merged anew from its tiles (``Tiled.merged`` / ``select``)."""
        cdef Py_ssize_t i, j
        cdef Acc *t
        cdef _Queue q
        cdef object v
        for j in range(self.n):
            _acc_reset(<_Agg>self.w.aggs[j], &self.run[j])
        if self.w.mode == SELECT:
            for j in range(self.n):
                (<_Queue>self.queues[j]).clear()
        self.lo = lo
        self.hi = hi
        self.valid = True
        i = self.left(lo)
        if self.w.mode == SELECT:
            while i < self.count and self.k(i) < hi:
                self._enqueue(i)
                i += 1
            return self._fronts(hi)
        while i < self.count and self.k(i) <= hi:
            self._merge_in(self.tile(i), False)
            i += 1
        return 0

    cdef int _merge_in(self, Acc *t, bint minus) except -1:
        cdef Py_ssize_t j
        for j in range(self.n):
            _acc_merge(<_Agg>self.w.aggs[j], &self.run[j], &t[j], minus)
        return 0

    cdef int _enqueue(self, Py_ssize_t i) except -1:
        cdef Py_ssize_t j
        cdef Acc *t = self.tile(i)
        for j in range(self.n):
            if t[j].o != NULL:
                (<_Queue>self.queues[j]).push(self.k(i), <object>t[j].o, self.w.picks[j])
        return 0

    cdef int _fronts(self, long long k) except -1:
        """A min/max range's accumulators: its queues' fronts, then the current tile ``k`` merged in."""
        cdef Py_ssize_t j
        for j in range(self.n):
            _obj_set(&self.run[j].o, (<_Queue>self.queues[j]).front(self.lo))
        if self.count and self.k(self.count - 1) == k:
            self._merge_in(self.tile(self.count - 1), False)
        return 0

    cdef int move(self, long long lo, long long k) except -1:
        """The cached range moved to ``[lo, k]`` for an event in order (``Step._move``)."""
        cdef Py_ssize_t p
        cdef long long c0 = self.lo, c1 = self.hi, m
        if not self.valid or lo < c0 or k < c1 or (self.w.mode == SLIDE and lo > c1):
            return self.rebuild(lo, k)
        if self.w.mode == SLIDE:
            if lo > c0 and self.count:  # the tiles of [c0, lo) leave the range
                p = self.left(c0)
                while p < self.count and self.k(p) < lo:
                    self._merge_in(self.tile(p), True)
                    p += 1
            if k > c1 and self.count and self.k(self.count - 1) > c1:  # the tiles of (c1, k] enter it
                p = self.left(c1 + 1)
                while p < self.count and self.k(p) <= k:
                    self._merge_in(self.tile(p), False)
                    p += 1
            self.lo = lo
            self.hi = k
            return 0
        # SELECT: the tiles that joined the range's earlier part, then the fronts and the current tile
        m = c1 if c1 > lo else lo
        if self.count and self.k(self.count - 1) >= m:
            p = self.left(m)
            while p < self.count and self.k(p) < k:
                self._enqueue(p)
                p += 1
        self.lo = lo
        self.hi = k
        for p in range(self.n):
            _acc_reset(<_Agg>self.w.aggs[p], &self.run[p])
        return self._fronts(k)

    cdef bint fits(self) noexcept:
        """Whether no range of this window can take a count past MAX_COUNT or a sum past SUM_LIMIT: every
        tile's and the settled accumulators' counts, and their partials' magnitudes, summed per aggregation
        (a hand-built state past them stays on the list path, whose integers do not wrap)."""
        cdef Py_ssize_t i, j
        cdef double c, m
        cdef Acc *a
        cdef int kind
        for j in range(self.n):
            kind = (<_Agg>self.w.aggs[j]).kind
            if kind == OTHER or kind == MIN or kind == MAX or kind == LAST or kind == SINCE:
                continue
            c = 0.0
            m = 0.0
            for i in range(-1, self.count):
                if i < 0:
                    if self.settled == NULL:
                        continue
                    a = &self.settled[j]
                else:
                    a = &self.tile(i)[j]
                c += fabs(<double>a.n)
                m += _part_size(&a.s) + _part_size(&a.q)
            if not (c <= _MAX_HELD_COUNT and m <= _LIMIT):
                return False
        return True

    cdef list tiles_list(self):
        cdef list out = PyList_New(self.count)
        cdef list tile
        cdef Py_ssize_t i, j
        cdef Acc *t
        cdef object x
        for i in range(self.count):
            t = self.tile(i)
            tile = PyList_New(self.n + 1)
            x = self.k(i)
            Py_INCREF(x)
            PyList_SET_ITEM(tile, 0, x)
            for j in range(self.n):
                x = _acc_list(<_Agg>self.w.aggs[j], &t[j])
                Py_INCREF(x)
                PyList_SET_ITEM(tile, j + 1, x)
            Py_INCREF(tile)
            PyList_SET_ITEM(out, i, tile)
        return out


cdef class _Mirror:
    """An entity's state held by one step (module comment): the windows (``_Held``, in the step's order),
    the bounded fields' magnitudes (``ba``, ``bq``; ``bp``: held, else absent or empty in ``bounds``), and
    the state's dicts (their keys' order is kept: the lists go back into them), and the watermark the step
    left (``wm``)."""
    cdef object step
    cdef tuple held
    cdef object tiles, settled, bounds
    cdef object wm  # the state's watermark as the step left it (one set by hand since: taken up anew)
    cdef unsigned long long gen  # counts the events applied and the ranges moved by online (Step._held)
    cdef double ba[_MAX_BOUNDED]
    cdef double bq[_MAX_BOUNDED]
    cdef bint bp[_MAX_BOUNDED]

    def export(self, state):
        """The lists the state would hold (``tiles``, ``settled``, ``bounds``), made anew; it stays held."""
        cdef dict tiles = {}, settled = {}
        cdef _Held h
        cdef Py_ssize_t i, j
        cdef _Agg g
        mine = {}
        for i in range(len(self.held)):
            h = <_Held>self.held[i]
            mine[h.w.key] = h
            if h.settled != NULL:
                for j in range(h.n):
                    g = <_Agg>h.w.aggs[j]
                    settled[g.name] = _acc_list(g, &h.settled[j])
        for key in self.tiles:
            tiles[key] = (<_Held>mine[key]).tiles_list()
        out_settled = {name: settled[name] for name in self.settled}
        return tiles, out_settled, self._bounds()

    cdef object _bounds(self):
        cdef Step s = <Step>self.step
        cdef Py_ssize_t i
        if self.bounds is None:
            return None
        out = dict(self.bounds)
        for i in range(len(s.bounded)):
            if self.bp[i]:
                out[(<tuple>s.bounded[i])[1]] = [self.ba[i], self.bq[i]]
        return out

    def release(self, state):
        """Write the state back into its lists (EntityState.release: ``native`` already cleared)."""
        tiles, settled, bounds = self.export(state)
        t, s = self.tiles, self.settled
        for key, value in tiles.items():
            t[key] = value
        for key, value in settled.items():
            s[key] = value
        b = self.bounds
        if b is not None:
            b.update(bounds)
        state._tiles = t
        state._settled = s
        state._bounds = b
        state._cache = {}


cdef inline bint _left(_Mirror m, object wm):
    """Whether ``wm`` is the watermark the step left on the state (one lowered or set by hand since: the
    state is taken up anew, or refused for the list path, as a stored one)."""
    if m.wm is wm:
        return True
    if m.wm is None or type(wm) is not int:
        return False
    return m.wm == wm


cdef bint _kept(object state, _Mirror m, unsigned long long gen, object seq, object wm) except -1:
    """Whether the state is as ``Step._held`` found it, from a derived field, an expression or ``check``
    (which may read the lists, apply another event to the state, or call online): ``m`` holds it still,
    with no event applied nor range moved (``gen``), or it was only written back (``seq``, the watermark and
    the lists' dicts as they were: held again); else the event goes to the lists, as the list path's."""
    if m.gen != gen:
        return False
    if state.native is m:
        return True
    if state.native is not None or state.seq is not seq or state.watermark is not wm:
        return False
    if state._tiles is not m.tiles or state._settled is not m.settled or state._bounds is not m.bounds:
        return False
    state.native = m
    return True


cdef _Mirror _take_up(Step s, object state):
    """The state held by the step ``s`` (module comment), or None where its lists are not what the view
    makes: the list path then applies the event, and every later one (``unheld``: what the list path
    computed from such a state, in its cache, would not be what the held path computes anew)."""
    m = _load(s, state)
    if m is None:
        state.unheld = True
    return m


cdef _Mirror _load(Step s, object state):
    cdef _Mirror m = _Mirror()
    cdef _Held h
    cdef _Win w
    cdef _Agg g
    cdef Py_ssize_t i, i_, j, n
    cdef long long k, last
    cdef object T, tile, wm
    cdef Acc *a
    if state.native is not None:
        state.release()
    tiles, settled, bounds = state._tiles, state._settled, state._bounds
    wm = state.watermark
    if type(tiles) is not dict or type(settled) is not dict or not (bounds is None or type(bounds) is dict):
        return None
    # a watermark not an int (a NumPy integer, a float, an int subclass set by hand) is read as the step reads
    # it (``<long long>wm``, as Step.apply just did): refusing it would leave a state the list path keeps
    # exact on the lists for good (``unheld``), though its watermark is an int again at its next event
    if len(tiles) != len(s.wins) or len(settled) != s.n_settled:
        return None
    m.step = s
    m.tiles, m.settled, m.bounds = tiles, settled, bounds
    held = []
    try:
        for i in range(len(s.wins)):
            w = <_Win>s.wins[i]
            h = _Held()
            h.w = w
            h.n = w.n
            held.append(h)
            h.run = <Acc *>calloc(w.n + 1, sizeof(Acc))
            if h.run == NULL:
                raise MemoryError()
            for j in range(w.n):
                _acc_blank(<_Agg>w.aggs[j], &h.run[j])
            if w.mode == SELECT and w.kind != LIFETIME:
                h.queues = tuple(_Queue() for j in range(w.n))
            T = tiles.get(w.key)
            if type(T) is not list:
                return None
            n = len(T)
            last = 0
            for i_ in range(n):
                tile = T[i_]
                if type(tile) is not list or len(tile) != w.n + 1:
                    return None
                k = _int(tile[0])
                if (i_ and k <= last) or wm is None or k > <long long>wm // w.r or k < _MIN_K // w.r:
                    return None  # out of order, after the watermark's tile, or before any event time
                last = k
                a = h.push(k)
                for j in range(w.n):
                    _acc_free(&a[j])
                    memset(&a[j], 0, sizeof(Acc))
                    _acc_load(<_Agg>w.aggs[j], &a[j], tile[j + 1])
            if w.kind == LIFETIME:
                h.settled = <Acc *>calloc(w.n + 1, sizeof(Acc))
                if h.settled == NULL:
                    raise MemoryError()
                for j in range(w.n):
                    g = <_Agg>w.aggs[j]
                    if g.name not in settled:
                        return None
                    _acc_load(g, &h.settled[j], settled[g.name])
                # the range every event reads: settled and every tile (Tiled.merged)
                for j in range(w.n):
                    g = <_Agg>w.aggs[j]
                    _acc_copy(g, &h.run[j], &h.settled[j])
            if not h.fits():
                return None
            if w.kind == LIFETIME:
                for i_ in range(h.count):
                    h._merge_in(h.tile(i_), False)
                h.valid = True
        for i in range(len(s.bounded)):
            f = (<tuple>s.bounded[i])[1]
            pair = None if bounds is None else bounds.get(f)
            if pair:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not float or type(pair[1]) is not float:
                    return None
                m.ba[i] = pair[0]
                m.bq[i] = pair[1]
                m.bp[i] = True
    except (TypeError, OverflowError):
        return None
    m.held = tuple(held)
    m.wm = wm
    state.native = m
    return m
