# Included by features/_native.pyx (its section on exact sums, kept apart for the module's length): the
# compiled ``renormalise`` (features.summaries) and the variance's value (aggregations.Var.value), each the
# same bits as the Python one, which stays the reference: any input these do not handle (a non-float or
# non-finite partial, an intermediate overflow, numbers wider than the fixed buffers, a result that would be
# subnormal, a noise check near float64's bottom) goes to it, and so does its error.
#
# renormalise loops math.fsum: ``_msum`` and ``_fsum_total`` are CPython 3.11's math_fsum
# (Modules/mathmodule.c, the partials and the final half-even correction), line for line, on finite
# inputs. The variance's value is an exact rational: ``(n * sum(x*x) - sum(x)**2) / (n * (n - 1))``,
# the sums' exact partials as integers in 64-bit limbs (two's complement), and the quotient rounded to
# nearest, ties to even, as CPython's int / int (which the Python value divides with).

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


# The variance's value.

from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport frexp, ldexp, sqrt

ctypedef unsigned long long u64

cdef extern from *:
    """
    /* (hi * 2**64 + lo) // d, and its remainder in *rem (hi < d): Cython would divide a u128 as a u64 */
    static inline unsigned long long rivulet_divrem(unsigned long long hi, unsigned long long lo,
                                                    unsigned long long d, unsigned long long *rem) {
    #if defined(__x86_64__) && defined(__GNUC__)
        unsigned long long q, r;  /* one divq (a 128-bit division is a library call): hi < d, no fault */
        __asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
        *rem = r;
        return q;
    #else
        unsigned __int128 w = ((unsigned __int128)hi << 64) | lo;
        *rem = (unsigned long long)(w % d);
        return (unsigned long long)(w / d);
    #endif
    }
    """
    ctypedef unsigned long long u128 "unsigned __int128"  # + - * and shifts only (see rivulet_divrem)
    int _clz "__builtin_clzll"(unsigned long long x) nogil
    unsigned long long _divrem "rivulet_divrem"(unsigned long long hi, unsigned long long lo,
                                                unsigned long long d, unsigned long long *rem) nogil

cdef enum:
    _W = 6  # limbs of an exact sum (384 bits, two's complement)
    _LIMBS = 16  # limbs of the numerator (1,024 bits, with room to shift it for the division)
    _SPAN = 6 * 64 - 53 - 8  # widest a sum's partials may spread (bits; sign and carries above)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _add_at(u64 *r, long long m, int sh) noexcept nogil:
    """``r[0:_W] += m * 2**sh`` (two's complement; ``|m| < 2**53``, ``sh + 53 <= _W * 64``)."""
    cdef int q = sh >> 6, b = sh & 63, i = q + 2
    cdef bint neg = m < 0
    cdef u64 mag = <u64>(-m if neg else m)
    cdef u64 lo = mag << b
    cdef u64 hi = (mag >> (64 - b)) if b else 0
    cdef u64 c, v
    cdef u128 t
    if not neg:
        t = <u128>r[q] + lo
        r[q] = <u64>t
        c = <u64>(t >> 64)
        if q + 1 < _W:
            t = <u128>r[q + 1] + hi + c
            r[q + 1] = <u64>t
            c = <u64>(t >> 64)
        while c and i < _W:
            r[i] += 1
            c = r[i] == 0
            i += 1
    else:
        c = r[q] < lo
        r[q] -= lo
        if q + 1 < _W:
            v = hi + c
            c = r[q + 1] < v
            r[q + 1] -= v
        while c and i < _W:
            c = r[i] == 0
            r[i] -= 1
            i += 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _sum_limbs(object parts, u64 *r, int *e0) except -2:
    """The exact total of a sum's partials as ``r[0:_W] * 2**e0[0]`` (two's complement): 0, or -1 where
    they are not finite floats (as many as a stored sum may have) or spread over more than ``_SPAN`` bits."""
    cdef long long ms[64]
    cdef int es[64]
    cdef Py_ssize_t n, i, k = 0
    cdef int e, lo = 0, hi = 0
    cdef double x
    cdef PyObject *o
    for i in range(_W):
        r[i] = 0
    e0[0] = 0
    if type(parts) is not list or PyList_GET_SIZE(parts) > 64:
        return -1
    n = PyList_GET_SIZE(parts)
    for i in range(n):
        o = PyList_GET_ITEM(parts, i)
        if not PyFloat_CheckExact(<object>o):
            return -1
        x = PyFloat_AS_DOUBLE(<object>o)
        if x == 0.0:
            continue
        if not (x - x == 0.0):
            return -1
        ms[k] = <long long>ldexp(frexp(x, &e), 53)  # x = ms * 2**es exactly
        es[k] = e - 53
        if k == 0 or es[k] < lo:
            lo = es[k]
        if k == 0 or es[k] > hi:
            hi = es[k]
        k += 1
    if k == 0:
        return 0
    if hi - lo > _SPAN:
        return -1
    for i in range(k):
        _add_at(r, ms[i], es[i] - lo)
    e0[0] = lo
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _bits(const u64 *x, int n) noexcept nogil:
    """The bit length of the unsigned ``x[0:n]``."""
    while n > 0 and x[n - 1] == 0:
        n -= 1
    return 0 if n == 0 else n * 64 - _clz(x[n - 1])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _shl(u64 *dst, const u64 *src, int sn, int sh) noexcept nogil:
    """``dst[0:_LIMBS] = src[0:sn] << sh`` (the caller checked that it fits)."""
    cdef int q = sh >> 6, b = sh & 63, i
    for i in range(_LIMBS):
        dst[i] = 0
    while sn > 0 and src[sn - 1] == 0:
        sn -= 1
    for i in range(sn):
        dst[i + q] |= src[i] << b
        if b and i + q + 1 < _LIMBS:
            dst[i + q + 1] |= src[i] >> (64 - b)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _abs_limbs(u64 *r) noexcept nogil:
    """``r[0:_W] = |r|`` (two's complement)."""
    cdef u64 c = 1
    cdef int i
    if r[_W - 1] >> 63:
        for i in range(_W):
            r[i] = ~r[i] + c
            c = c and r[i] == 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _sqr_mul(const u64 *a, const u64 *b, u64 n, u64 *a2, u64 *nb) noexcept nogil:
    """``a2[0:2*_W] = a * a`` and ``nb[0:_W+1] = n * b`` (unsigned, schoolbook)."""
    cdef int i, j
    cdef u64 c
    cdef u128 t
    for i in range(2 * _W):
        a2[i] = 0
    for i in range(_W):
        c = 0
        if a[i]:
            for j in range(_W):
                t = <u128>a[i] * a[j] + a2[i + j] + c
                a2[i + j] = <u64>t
                c = <u64>(t >> 64)
        a2[i + _W] = c
    c = 0
    for i in range(_W):
        t = <u128>b[i] * n + c
        nb[i] = <u64>t
        c = <u64>(t >> 64)
    nb[_W] = c


# the steps of Var.value in C (n, the sums as limbs, the numerator, the division and its rounding): one
# function, so that its checks are read in the order the Python value makes them
@cython.cdivision(True)
@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _var_c(object acc, double *out) except -2:
    """aggregations.Var.value of ``acc`` in ``out``: 1, or 0 for None (fewer than two values), or -1 where
    the Python value is the one to take (module's comment at the top)."""
    cdef u64 sa[_W]
    cdef u64 sb[_W]
    cdef u64 a2[2 * _W]
    cdef u64 nb[_W + 1]
    cdef u64 x[_LIMBS]
    cdef u64 y[_LIMBS]
    cdef u64 q[_LIMBS]
    cdef int ea, eb, m, bx, by, nbits, k, lq, sh, i, j, b, ovf = 0
    cdef long long n
    cdef u64 d, t, mant, rest, rem = 0
    cdef u128 w
    cdef bint sticky, zero_a = True
    cdef object n_
    if type(acc) is not list or PyList_GET_SIZE(acc) != 3:
        return -1
    n_ = <object>PyList_GET_ITEM(acc, 0)
    if type(n_) is not int:
        return -1
    n = PyLong_AsLongLongAndOverflow(n_, &ovf)
    if ovf < 0 or (ovf == 0 and n < 2):
        return 0
    if ovf > 0 or n >= 4294967296:  # n * (n - 1) in 64 bits
        return -1
    if _sum_limbs(<object>PyList_GET_ITEM(acc, 1), sa, &ea):
        return -1
    if _sum_limbs(<object>PyList_GET_ITEM(acc, 2), sb, &eb):
        return -1
    if sb[_W - 1] >> 63 or _bits(sb, _W) == 0:  # sum(x*x) <= 0: the numerator is not positive
        out[0] = 0.0
        return 1
    _abs_limbs(sa)
    _sqr_mul(sa, sb, <u64>n, a2, nb)
    # num = n * sum(x*x) - sum(x)**2 = (x - y) * 2**m, both shifted to the smaller exponent
    for i in range(_W):
        zero_a = zero_a and sa[i] == 0
    m = eb if zero_a or eb < 2 * ea else 2 * ea
    bx = _bits(nb, _W + 1) + eb - m
    by = 0 if zero_a else _bits(a2, 2 * _W) + 2 * ea - m
    if bx > _LIMBS * 64 - 140 or by > _LIMBS * 64 - 140:
        return -1
    _shl(x, nb, _W + 1, eb - m)
    _shl(y, a2, 0 if zero_a else 2 * _W, 0 if zero_a else 2 * ea - m)
    i = _LIMBS - 1
    while i > 0 and x[i] == y[i]:
        i -= 1
    if x[i] <= y[i]:
        out[0] = 0.0
        return 1
    t = 0  # x -= y
    for i in range(_LIMBS):
        w = <u128>x[i] - y[i] - t
        x[i] = <u64>w
        t = <u64>(w >> 127)
    if m + 1070 < 64:  # the noise rule may apply (values below about 1e-140): the Python value decides
        return -1
    # num * 2**m / d rounded to nearest, ties to even: num shifted by k so that the quotient has 66 bits
    # or more, its top 64 taken, the rest and the remainder as the sticky bit
    d = <u64>n * <u64>(n - 1)
    nbits = _bits(x, _LIMBS)
    k = 66 + (64 - _clz(d)) - nbits
    if k < 0:
        k = 0
    _shl(y, x, _LIMBS, k)
    i = _LIMBS - 1
    while y[i] == 0:  # y > 0
        q[i] = 0
        i -= 1
    while i >= 0:
        q[i] = _divrem(rem, y[i], d, &rem)
        i -= 1
    lq = _bits(q, _LIMBS)
    sh = lq - 64
    j = sh >> 6
    b = sh & 63
    t = q[j] >> b
    if b:
        t |= q[j + 1] << (64 - b)
    sticky = rem != 0 or (b and q[j] & ((<u64>1 << b) - 1) != 0)
    for i in range(j):
        sticky = sticky or q[i] != 0
    mant = t >> 11
    rest = t & 0x7FF
    if rest > 0x400 or (rest == 0x400 and (sticky or mant & 1)):
        mant += 1
    if not (-1022 <= lq - 1 - k + m <= 1022):  # subnormal or near the top: the Python value
        return -1
    out[0] = ldexp(<double>mant, lq - 53 - k + m)
    return 1


cdef object _var_value(_Agg g, object acc, long long t):
    """``g.value(acc, t)`` for the exact Var and Std: compiled where ``_var_c`` takes it."""
    cdef double v
    cdef int r = _var_c(acc, &v)
    if r == 1:
        return sqrt(v) if g.root else v
    if r == 0:
        return None
    return g.value(acc, t)


def _var_value_for_test(acc, bint std):
    """``(compiled, value)``: the step's Var (or Std, ``std``) value of ``acc``, and whether it was compiled
    (else the Python value's)."""
    cdef double v
    cdef int r = _var_c(acc, &v)
    if r == 1:
        return True, sqrt(v) if std else v
    if r == 0:
        return True, None
    return False, (A.Std if std else A.Var)("x").value(acc, 0)
