"""Model versions to MLflow (the optional extra ``rivulet[mlflow]``), switched on by
``RIVULET_MLFLOW_TRACKING_URI``: the learner's checkpoints as MLflow runs and registered model versions, the
alias ``champion`` on the version served (:mod:`streaming.tracking.tracker`). MLflow is imported only by
:mod:`~streaming.tracking.writer` and :mod:`~streaming.tracking.pyfunc`, in the tracker's thread; without the
extra installed, a tracking URI set is reported as an error and the learner runs without MLflow."""

from streaming.tracking.tracker import Tracker, TrackerStats, tracker_for

__all__ = ["Tracker", "TrackerStats", "tracker_for"]
