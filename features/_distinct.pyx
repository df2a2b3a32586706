# cython: language_level=3, boundscheck=True, wraparound=True, cdivision=True, infer_types=False
"""The exact-set path of :mod:`features.distinct`, compiled (Cython): ``hash_value``, ``add``, ``merge``,
``copy`` and ``value`` with the Python functions' results to the bit (the same hashes, the same lists, the
same sketches; tests/features/test_native_distinct.py runs both).

What is compiled is the common case: a value of exactly ``str``, ``int``, ``bool``, ``float`` or None, and an
accumulator holding a list of at most 64 ints within int64, sorted and unique (the lists this module and
the Python one make). Anything else (a subclass, an int beyond int64, a sketch, a list that is not sorted
or holds something else, an accumulator about to become a sketch) is handed to the Python functions, which
stay the reference: so an odd input gives the Python result or raises the Python error, in the same order.

The hash is hashlib's blake2b, called through its C type (no BLAKE2 of our own): the prefixed bytes are built
in C (``repr`` of an int64 is its decimal digits, ``repr`` of a float is ``PyOS_double_to_string(x, 'r', 0,
Py_DTSF_ADD_DOT_0)``, which is what ``float.__repr__`` calls), a copy of an empty ``blake2b(digest_size=8)``
is updated with them, and the 8 bytes of the digest are read as a little-endian signed int64.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice, PyList_Insert, PyList_New
from cpython.list cimport PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.mem cimport PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsEncodedString
from libc.math cimport floor, isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, strlen

import hashlib

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    double PyFloat_AS_DOUBLE(object o)
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    int Py_DTSF_ADD_DOT_0

cdef enum:
    _EXACT = 64  # features.distinct.DISTINCT_EXACT (which uses this module only if EXACT is the same)

EXACT = _EXACT

# an empty blake2b of 8 bytes, copied for each hash (cheaper than the constructor's keyword argument)
cdef object _EMPTY = hashlib.blake2b(digest_size=8)
cdef object _copy = type(_EMPTY).copy
cdef object _update = type(_EMPTY).update
cdef object _digest = type(_EMPTY).digest

cdef object _D = None  # features.distinct, for what is handed to Python (imported at the first hand-over)


cdef object _py():
    global _D
    if _D is None:
        from features import distinct
        _D = distinct
    return _D


cdef inline bytes _tagged(char tag, const char *s, Py_ssize_t n):
    cdef bytes b = PyBytes_FromStringAndSize(NULL, n + 1)
    cdef char *p = PyBytes_AS_STRING(b)
    p[0] = tag
    memcpy(p + 1, s, n)
    return b


cdef inline bytes _number(long long x):
    """b"n" + repr(x) for an int64 x: its decimal digits (snprintf's "%lld", without the format parsing)."""
    cdef char buf[24]  # "n", a sign and at most 19 digits
    cdef int i = 24
    cdef unsigned long long u = <unsigned long long>x
    if x < 0:
        u = 0ULL - u  # the magnitude, INT64_MIN's included
    while True:
        i -= 1
        buf[i] = <char>(48 + u % 10)
        u = u // 10
        if u == 0:
            break
    if x < 0:
        i -= 1
        buf[i] = 45  # "-"
    i -= 1
    buf[i] = 110  # "n"
    return PyBytes_FromStringAndSize(buf + i, 24 - i)


cdef object _blake(bytes data):
    """blake2b(data, digest_size=8) as a little-endian signed int64 (a Python int)."""
    h = _copy(_EMPTY)
    _update(h, data)
    cdef bytes d = _digest(h)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(d)
    cdef uint64_t u = 0
    cdef int i
    for i in range(7, -1, -1):
        u = (u << 8) | p[i]
    return PyLong_FromLongLong(<int64_t>u)


cdef object _hash(object v):
    """hash_value(v): the compiled cases, the others through the Python function."""
    cdef type t = type(v)
    cdef bytes data
    cdef long long x
    cdef int overflow = 0
    cdef double d
    cdef char *r
    if t is str:
        if PyUnicode_IS_ASCII(v):
            data = _tagged(b"s", <const char *>PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v))
        else:
            e = PyUnicode_AsEncodedString(v, b"utf-8", b"surrogatepass")
            data = _tagged(b"s", PyBytes_AS_STRING(e), PyBytes_GET_SIZE(e))
    elif t is int:
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow:  # beyond int64: Python's repr (and its limit on the digits)
            return _py().python_hash_value(v)
        data = _number(x)
    elif t is float:
        d = PyFloat_AS_DOUBLE(v)
        # float.is_integer() and INT64_MIN <= v <= INT64_MAX (no double lies between 2**63 - 1 and 2**63)
        if isfinite(d) and floor(d) == d and -9223372036854775808.0 <= d < 9223372036854775808.0:
            data = _number(<long long>d)
        else:
            r = PyOS_double_to_string(d, b"r", 0, Py_DTSF_ADD_DOT_0, NULL)
            try:
                data = _tagged(b"n", r, <Py_ssize_t>strlen(r))
            finally:
                PyMem_Free(r)
    elif t is bool:
        data = b"n1" if v is True else b"n0"
    elif v is None:
        return None
    else:  # a subclass, or anything else (isinstance may look at __class__): Python decides
        return _py().python_hash_value(v)
    return _blake(data)


def hash_value(v):
    """features.distinct.hash_value, compiled."""
    return _hash(v)


cdef inline bint _int64(PyObject *o, int64_t *out):
    """``o`` as an int64, if it is exactly an int within int64 (else False, no error set)."""
    cdef int overflow = 0
    if type(<object>o) is not int:
        return False
    out[0] = PyLong_AsLongLongAndOverflow(<object>o, &overflow)
    return not overflow


def add(acc, v):
    """features.distinct.add, compiled: a binary search (bisect_left's own steps) and an insert."""
    h = _hash(v)
    if h is None:
        return
    if type(acc) is not list or PyList_GET_SIZE(acc) < 1:
        _py()._insert(acc, h)
        return
    x = <object>PyList_GET_ITEM(acc, 0)
    if type(x) is not list:
        _py()._insert(acc, h)
        return
    cdef int64_t e = 0
    cdef int overflow = 0
    cdef int64_t k = PyLong_AsLongLongAndOverflow(h, &overflow)  # a hash: always within int64
    cdef Py_ssize_t n = PyList_GET_SIZE(x), lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if not _int64(PyList_GET_ITEM(x, mid), &e):
            _py()._insert(acc, h)  # not a list of int64s: Python's comparisons
            return
        if e < k:
            lo = mid + 1
        else:
            hi = mid
    # x[lo] (lo < n) was read in the search: hi only ever takes a visited index
    if lo < n and _int64(PyList_GET_ITEM(x, lo), &e) and e == k:
        return
    if n >= _EXACT:  # the insert makes it a sketch (or the list was already too long): Python
        _py()._insert(acc, h)
        return
    PyList_Insert(x, lo, h)


cdef Py_ssize_t _read(object xs, int64_t *out) except -2:
    """The int64s of a sorted unique list of at most 64 ints into ``out``: its length, or -1 if it is not one."""
    cdef Py_ssize_t n = PyList_GET_SIZE(xs), i
    if n > _EXACT:
        return -1
    for i in range(n):
        if not _int64(PyList_GET_ITEM(xs, i), &out[i]):
            return -1
        if i and out[i - 1] >= out[i]:
            return -1
    return n


def merge(acc, other):
    """features.distinct.merge, compiled for two lists: a linear merge equal to ``sorted(set(x).union(y))``
    (a value in both keeps ``x``'s int), a sketch beyond 64 through Python."""
    if type(acc) is not list or type(other) is not list or PyList_GET_SIZE(acc) < 1 \
            or PyList_GET_SIZE(other) < 1:
        return _py().python_merge(acc, other)
    x = <object>PyList_GET_ITEM(acc, 0)
    y = <object>PyList_GET_ITEM(other, 0)
    if type(x) is not list or type(y) is not list:
        return _py().python_merge(acc, other)
    cdef Py_ssize_t nx = PyList_GET_SIZE(x), ny = PyList_GET_SIZE(y)
    if ny == 0:
        return
    if nx == 0:
        acc[0] = PyList_GetSlice(y, 0, ny)
        return
    cdef int64_t a[_EXACT]
    cdef int64_t b[_EXACT]
    cdef PyObject *picked[2 * _EXACT]
    if _read(x, a) < 0 or _read(y, b) < 0:  # not sorted unique int64s: sorted(set(...)) in Python
        return _py().python_merge(acc, other)
    cdef Py_ssize_t i = 0, j = 0, m = 0
    while i < nx and j < ny:
        if a[i] < b[j]:
            picked[m] = PyList_GET_ITEM(x, i)
            i += 1
        elif b[j] < a[i]:
            picked[m] = PyList_GET_ITEM(y, j)
            j += 1
        else:  # in both: the set of x keeps x's int
            picked[m] = PyList_GET_ITEM(x, i)
            i += 1
            j += 1
        m += 1
    while i < nx:
        picked[m] = PyList_GET_ITEM(x, i)
        i += 1
        m += 1
    while j < ny:
        picked[m] = PyList_GET_ITEM(y, j)
        j += 1
        m += 1
    union = PyList_New(m)
    for i in range(m):
        Py_INCREF(<object>picked[i])
        PyList_SET_ITEM(union, i, <object>picked[i])
    if m > _EXACT:
        D = _py()
        acc[0] = D._store(D._sketch_of(union))
    else:
        acc[0] = union


def copy(acc):
    """features.distinct.copy, compiled."""
    if type(acc) is not list or PyList_GET_SIZE(acc) < 1:
        return _py().python_copy(acc)
    x = <object>PyList_GET_ITEM(acc, 0)
    return [PyList_GetSlice(x, 0, PyList_GET_SIZE(x)) if type(x) is list else x]


def value(acc):
    """features.distinct.value, compiled for a list (its length); a sketch's estimate through Python."""
    if type(acc) is list and PyList_GET_SIZE(acc) >= 1:
        x = <object>PyList_GET_ITEM(acc, 0)
        if type(x) is list:
            return PyList_GET_SIZE(x)
    return _py().python_value(acc)
