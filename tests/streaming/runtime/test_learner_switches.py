"""A learner whose sessions end and start again at many points of the stream (as lease turns make them do)
learns every model exactly as one that never switched: the switches forced in process, on real Kafka and
Redis, every record already in the log (so the merge order is the data's alone)."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.learning.merge import Positioned
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.fencing_drill import send
from tests.support.learning import LEARNER_IDLE_S, delayed_stream, registry
from tests.support.model_defs import TRIO

pytestmark = pytest.mark.integration

N, DELAY = 1_500, 25


class Switching(LearnerWorker):
    """Ends its session after every ``every``-th record (as a turn that took or gave back a spec would)."""

    def __init__(self, *args: Any, every: int, **kwargs: Any) -> None:
        self.every, self.seen, self.sessions = every, 0, 0
        super().__init__(*args, **kwargs)

    def _session(self, specs: Any) -> Any:
        session = super()._session(specs)
        self.sessions += 1
        process = session.process

        def counted(rec: Positioned) -> None:
            process(rec)
            self.seen += 1
            if self.seen % self.every == 0:
                self._changes.taken.append(specs[0].name)  # a new session for the same specs

        session.process = counted  # type: ignore[method-assign]
        return session


@pytest.mark.parametrize("every", [37, 211])
def test_session_switches_do_not_change_what_the_models_learn(topics: Settings, every: int) -> None:
    s = topics
    _, records = delayed_stream(N, DELAY, function=2, seed=11)
    send(s, records)
    clean = LearnerWorker(
        s.model_copy(update={"redis_prefix": f"{s.redis_prefix}clean:"}),
        TRIO,
        registry=registry(s, f"{s.redis_prefix}clean:"),
    )
    clean.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    worker = Switching(s, TRIO, registry=registry(s), every=every)
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    assert worker.sessions > 2, worker.sessions
    reg = registry(s)
    for spec in TRIO:
        final = reg.load(spec.name, reg.current_version(spec.name)).state
        want = clean.core.models[spec.name]
        assert final.n_learned == want.n_learned, spec.name
        assert [m.get() for m in final.metrics] == [m.get() for m in want.metrics], spec.name
        assert final.model["LogisticRegression"].weights == want.model["LogisticRegression"].weights
