# Included by features/_native.pyx (its section on exact sums, kept apart for the module's length): the
# compiled ``renormalise`` (features.summaries), the same bits as the Python one, which stays the
# reference: any input it does not handle (a non-float or non-finite partial, an intermediate overflow)
# goes to it, and so does its error.
#
# renormalise loops math.fsum: ``_msum`` and ``_fsum_total`` are CPython 3.11's math_fsum
# (Modules/mathmodule.c, the partials and the final half-even correction), line for line, on finite
# inputs.

cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact

from features.summaries import MAX_PARTIALS

cdef Py_ssize_t _MAX_PARTIALS = MAX_PARTIALS

cdef enum:
    _MSUM = 256  # math_fsum's partials held here (finite floats: at most about 40); more: the Python one
    _RN_IN = 256  # partials renormalised here; more: the Python renormalise


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _msum(double *p, int n, double x) noexcept nogil:
    """math_fsum's loop for one more item ``x`` into its ``n`` partials ``p``: the new number of partials,
    or -1 on an intermediate overflow (math_fsum: OverflowError), or -2 when ``p`` is full."""
    cdef double xsave = x, y, t, hi, yr, lo
    cdef int i = 0, j
    for j in range(n):
        y = p[j]
        if fabs(x) < fabs(y):
            t = x
            x = y
            y = t
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            p[i] = lo
            i += 1
        x = hi
    n = i
    if x != 0.0:
        if not (x - x == 0.0):  # not finite: from finite items, an intermediate overflow
            return -1
        if n >= _MSUM:
            return -2
        p[n] = x
        n += 1
    return n


cdef double _fsum_total(const double *p, int n) noexcept nogil:
    """math_fsum's result from its partials: summed from the top while exact, then the half-even
    correction across partials."""
    cdef double hi = 0.0, x, y, yr, lo = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        while n > 0:
            x = hi
            n -= 1
            y = p[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


cdef int _renorm(list a, Py_ssize_t start) except -1:
    """features.summaries.renormalise, compiled: the same partials (each ``math.fsum`` of the partials and
    of the totals taken out so far is the previous call's partials with one more item); anything it does
    not handle, the Python one. 1 where compiled, 0 where the Python one ran."""
    cdef double p[_MSUM]
    cdef double out[_RN_IN]
    cdef Py_ssize_t i, cnt = 0
    cdef object o
    if not _renorm_c(a, start, p, out, &cnt):
        _renormalise(a, start)
        return 0  # the Python one
    # acc[start:] = out[::-1] or [0.0], written in place (the same list, the same contents)
    if cnt == 0:
        out[0] = 0.0
        cnt = 1
    for i in range(cnt):
        o = out[cnt - 1 - i]
        if start + i < PyList_GET_SIZE(a):
            a[start + i] = o
        else:
            a.append(o)
    if start + cnt < PyList_GET_SIZE(a):
        del a[start + cnt :]
    return 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _renorm_c(list a, Py_ssize_t start, double *p, double *out, Py_ssize_t *cnt):
    """The totals ``renormalise`` keeps, in ``out`` (largest first, ``cnt`` of them); False where it leaves
    them to the Python one (a partial not a finite float, an overflow, too many partials)."""
    cdef Py_ssize_t n = PyList_GET_SIZE(a) - start, i, k = 0
    cdef int np_ = 0
    cdef double x, hi
    cdef PyObject *o
    if start < 0 or n < 0 or n > _RN_IN:
        return False
    for i in range(n):
        o = PyList_GET_ITEM(a, start + i)
        if not PyFloat_CheckExact(<object>o):
            return False
        x = PyFloat_AS_DOUBLE(<object>o)
        if not (x - x == 0.0):
            return False
        np_ = _msum(p, np_, x)
        if np_ < 0:
            return False
    while k <= _MAX_PARTIALS:
        hi = _fsum_total(p, np_)
        if hi == 0.0:
            break
        if k >= _RN_IN:
            return False
        out[k] = hi
        k += 1
        np_ = _msum(p, np_, -hi)
        if np_ < 0:
            return False
    cnt[0] = k
    return True


def _renormalise_for_test(list a, Py_ssize_t start):
    """The step's renormalise (``_renorm``) on ``a``; True where it was compiled, not the Python one's."""
    return _renorm(a, start) == 1
