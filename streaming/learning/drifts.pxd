# drifts.py compiled (setup.py): the per-model state as its C type (state.pxd), for loss_drifted's typed state
from streaming.learning.state cimport ModelState as CState
