# core.py compiled (setup.py): the per-model state as its C type (state.pxd), for the hot path's typed locals
from streaming.learning.state cimport ModelState as CState, Recent as CRecent
from streaming.learning.evidence cimport Evidence as CEvidence
from streaming.learning.state cimport score as c_score
from streaming.learning.drifts cimport loss_drifted as c_loss_drifted
