# The C layout of the paired evidence where streaming/learning/evidence.py is compiled (setup.py): the learner
# core (core.pxd) adds to it on every paired record, as C struct members.
cimport cython


@cython.auto_pickle(False)  # pickled through __getstate__ / __setstate__, as the dataclass it was
cdef class Evidence:
    cdef public object n, incumbent_loss, candidate_loss, first, last
    cdef public dict since
    cdef dict __dict__  # attributes no field holds (pickled), and weak references, as on the dataclass it was
    cdef object __weakref__
