"""Topic creation when the broker already has a topic that the admin client's listing does not show."""

from __future__ import annotations

import pytest

from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

pytestmark = pytest.mark.unit


class _RacedAdmin:
    """An admin client whose listing does not show topics yet, though the broker already has them (a
    create that another process won, or metadata not yet caught up with a create a moment before)."""

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, new: object, validate_only: bool = False) -> object:
        from kafka.errors import TopicAlreadyExistsError

        raise TopicAlreadyExistsError("exists")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("names", [["t.a"], ["t.a", "t.b"]])
def test_a_create_that_finds_the_topics_existing_reports_none_created(names: list[str]) -> None:
    """Regression: a raced create reported every topic as created by this call (``True``); the second
    ``create()`` of the test above failed that way on a loaded broker."""
    admin = TopicAdmin(Settings(), client=_RacedAdmin())  # type: ignore[arg-type]
    assert admin.create(names) == dict.fromkeys(names, False)
