"""Faust's consumer handing a topic's records over in bulk: the feature worker's hot path without Faust's
per-message stream.

Faust delivers every record it fetches through the conductor to each stream subscribed to its topic: a
lock, an ``Event`` and a queue put per record, then the stream's iteration (sensors, processors, the
current event) and an acknowledgement through the message's reference count. Profiles of the feature worker
showed that path at about 40 us a record, a fifth of the worker's time at its limit (notes:
profile-13-worker.md), for records the worker then reads into batches anyway.

:class:`Consumer` takes the records of the topics given an :class:`~streaming.runtime.feature_batches.Inbox`
(:meth:`App.inbox`) out of Faust's fetch loop, with Faust's own bookkeeping for them (the read offset that
drops a record already read, the gaps in an acknowledged topic) and hands each fetch's records to the inbox
in one call; records of any other topic go through Faust as before. The agent reading an inbox acknowledges
its records itself (``consumer.ack``) once they are processed, so Faust's committer commits exactly what it
did before, and everything else (group membership, assignment, rebalances, the seek back to the committed
offsets after one, commits) is Faust's. A fetch of a generation that ended during the fetch, or taken while
the flow is stopped (a rebalance), is dropped: Faust seeks back to the committed offsets before the flow
resumes, so those records are read again. That seek is :mod:`streaming.runtime.faust_fetch`'s: aiokafka's
left a partition without a committed offset where it was, past the records dropped (issue 15).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from streaming.runtime import faust_fetch
from streaming.runtime.feature_batches import Inbox

__all__ = ["App", "Consumer"]


class Consumer(faust_fetch.Consumer):
    """Faust's consumer (:mod:`streaming.runtime.faust_fetch`'s) whose inbox topics' records are handed
    over in bulk (module docstring)."""

    async def getmany(self, timeout: float) -> AsyncIterator[Any]:
        inboxes: dict[str, Inbox] = getattr(self.app, "inboxes", {})
        # the generation of the records, read once Faust's getmany has them: it waits for a stopped flow to
        # resume, and a rebalance that ends meanwhile brings records of the new generation, read from the
        # committed offsets (read before the wait, they were dropped, positions past them: never read again)
        generation: int | None = None
        taken: dict[Inbox, list[Any]] = defaultdict(list)
        read_offset = self._read_offset
        async for tp, message in super().getmany(timeout):
            if generation is None:
                generation = self.app.consumer_generation_id
            inbox = inboxes.get(tp.topic)
            if inbox is None:
                yield tp, message
                continue
            # what Faust's _drain_messages does before it hands a record to the conductor
            offset, last = message.offset, read_offset[tp]
            if last is not None and offset < last:
                continue  # read already
            # (Faust's tests ``last`` for truth: a gap after offset 0 was never filled, the commit stuck at 1)
            if last is not None and offset - last > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, last + 1, offset)
            read_offset[tp] = offset
            taken[inbox].append(message)
        if not taken or not self.flow_active or self.app.consumer_generation_id != generation:
            return  # nothing, or a rebalance began: read again from the committed offsets (docstring)
        for inbox, messages in taken.items():
            await inbox.put(messages, self.suspend_flow)
        every = self._commit_every
        if every is not None and self._n_acked >= every:
            self._n_acked = 0
            await self.commit()


class _Transport(faust_fetch.Transport):
    Consumer = Consumer


class App(faust_fetch.App):
    """A :class:`streaming.runtime.faust_fetch.App` whose consumer hands the records of the topics given an
    inbox (:meth:`inbox`) over in bulk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inboxes: dict[str, Inbox] = {}
        super().__init__(*args, **kwargs)

    def inbox(self, topic: str, capacity: int) -> Inbox:
        """The inbox of ``topic`` (made on first use), holding up to about ``capacity`` records."""
        if topic not in self.inboxes:
            self.inboxes[topic] = Inbox(capacity)
        return self.inboxes[topic]

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
