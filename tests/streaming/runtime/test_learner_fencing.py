"""Fenced learners on real Kafka and Redis (issue 15's drill, tests/support/fencing_drill.py): two learner
processes for one model, the owner paused (SIGSTOP) past its lease, the standby takes over and writes, the
owner resumed (SIGCONT) writes nothing more and stops with a clear message; the registry's versions form one
unbroken lineage, each written by the holder of its epoch; the final model equals one learned without any of
this. The same drill on the local cluster, under load: tests/deploy/test_cluster_learners_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.settings import Settings
from tests.support.fencing_drill import fencing_drill

pytestmark = pytest.mark.integration


def test_a_paused_owner_is_fenced_and_the_standby_takes_over(topics: Settings, tmp_path: Path) -> None:
    fencing_drill(topics, tmp_path)
