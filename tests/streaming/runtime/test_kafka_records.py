"""Fetched batches whose header names are not UTF-8 (streaming.runtime.kafka_records): every record is
read, in order, the bad name kept as its bytes (surrogateescape), the others as aiokafka reads them; one
such record stopped the feature worker's fetch for good (attack 15, finding 5)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords as AiokafkaRecords

from features.definitions import FeatureView
from streaming.runtime import kafka_records
from streaming.runtime.feature_forward import forwarded

pytestmark = pytest.mark.unit

BAD = b"\xff\xfe-trace"


class _NotUtf8(str):
    """A header name aiokafka's Python builder writes as bytes that are not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return BAD


def _batch(compression: int, headers: list[list[tuple[str, bytes]]], base: int = 40) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, h in enumerate(headers):
        builder.append(i, timestamp=1_000 + i, key=b"k%d" % i, value=b"v%d" % i, headers=h)
    buf = builder.build()
    buf[0:8] = base.to_bytes(8, "big")  # the batch's base offset (the CRC does not cover it)
    return bytes(buf)


def _read(data: bytes) -> list[Any]:
    records = kafka_records.MemoryRecords(data)
    out = []
    while records.has_next():
        out.extend(iter(records.next_batch()))
    return out


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip
def test_a_batch_with_a_header_name_that_is_not_utf8_is_read_whole(compression: int) -> None:
    headers = [[("a", b"1")], [(_NotUtf8("x"), b"2"), ("b", b"3")], [("c", b"4")]]
    data = _batch(compression, headers) + _batch(compression, [[("d", b"5")]], base=43)
    theirs = AiokafkaRecords(data).next_batch()
    with pytest.raises(UnicodeDecodeError):  # aiokafka's own reader
        list(iter(theirs))
    got = _read(data)
    assert [r.offset for r in got] == [40, 41, 42, 43]
    assert [(r.key, r.value) for r in got] == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k0", b"v0")]
    assert [list(r.headers) for r in got] == [
        [("a", b"1")],
        [(BAD.decode("utf-8", "surrogateescape"), b"2"), ("b", b"3")],
        [("c", b"4")],
        [("d", b"5")],
    ]


def test_a_batch_of_good_records_reads_as_aiokafka_reads_it() -> None:
    data = _batch(0, [[("a", b"1")], [], [("é", b"3")]])
    batch = AiokafkaRecords(data).next_batch()
    theirs = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in iter(batch)]
    ours = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in _read(data)]
    assert ours == theirs and len(ours) == 3


def test_a_forwarded_copy_carries_the_bad_name_as_replacement_characters() -> None:
    """The repartition record must be writable: aiokafka encodes header names as UTF-8 strictly."""

    m = SimpleNamespace(value=b"{}", topic="events", partition=0, offset=7, timestamp=1.0)
    m.headers = [(BAD.decode("utf-8", "surrogateescape"), b"2"), ("é", b"3")]
    ((_, _, headers, _),) = forwarded(FeatureView(name="zip", entity="zipcode"), [m])
    assert headers[:2] == [("\ufffd\ufffd-trace", b"2"), ("é", b"3")]
    for name, _ in headers:
        name.encode("utf-8")


def test_install_makes_aiokafkas_fetcher_read_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka_fetcher, "MemoryRecords", AiokafkaRecords)
    kafka_records.install()
    assert aiokafka_fetcher.MemoryRecords is kafka_records.MemoryRecords


@pytest.mark.parametrize("bad", [False, True])
def test_a_batch_can_be_read_with_next_as_aiokafka_reads_a_control_batch(bad: bool) -> None:
    """aiokafka's fetcher calls ``next`` on a batch (the marker of a control batch, read committed) as well
    as iterating one: both give the records in order, from where the other stopped (a batch that is not an
    iterator stopped the worker's fetch at the first transaction marker)."""
    headers = [[("a", b"1")], [(_NotUtf8("x") if bad else "x", b"2")], [("c", b"4")]]
    batch = kafka_records.MemoryRecords(_batch(0, headers)).next_batch()
    first = next(batch)
    rest = list(batch)
    assert [r.offset for r in [first, *rest]] == [40, 41, 42]
    assert [r.value for r in [first, *rest]] == [b"v0", b"v1", b"v2"]
    with pytest.raises(StopIteration):
        next(batch)
