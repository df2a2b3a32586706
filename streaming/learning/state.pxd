# The C layout of the learner's per-model state where streaming/learning/state.py is compiled (setup.py):
# the learner core (core.pxd, drifts.pxd) reads these fields as C struct members. Python code sees the same
# attributes as before. Fields typed dict are dicts in every state this code writes or a snapshot holds.
cimport cython


@cython.auto_pickle(False)  # pickled through __getstate__ / __setstate__, as the dataclasses they were
cdef class Recent:
    cdef public object order
    cdef public set keys
    cdef dict __dict__  # attributes no field holds, and weak references, as on the dataclass it was
    cdef object __weakref__


@cython.auto_pickle(False)
cdef class ModelState:
    cdef public object name, spec, task, model, metrics, rolling, loss_detector
    cdef public dict feature_detectors
    cdef public object features, classifier, wants_proba, wants_label, label_from_proba
    cdef public object last_ts, loss_sum, loss_n
    cdef public list scoring
    cdef public dict pending
    cdef public object pending_values
    cdef public dict early
    cdef public Recent seen, learned
    cdef public object drifts
    cdef public dict rejected
    cdef public object status
    cdef public dict classes, kinds
    cdef public object clock, quarantine, role, evidence, decisions, scheduled_at
    cdef public dict abstained
    cdef public object recent_xy
    cdef public dict controls, counters
    cdef dict __dict__
    cdef object __weakref__


# called by the core (core.pxd) in C, without a Python call's cost; Python callers see the same functions
cpdef score(list scoring, object y, object label_pred, object proba)
