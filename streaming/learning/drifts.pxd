# drifts.py compiled (setup.py): the per-model state as its C type (state.pxd), for loss_drifted's typed state
from streaming.learning.state cimport ModelState as CState

# called by the core (core.pxd) in C, without a Python call's cost; Python callers see the same function
cpdef loss_drifted(CState state, object y, object label_pred)
