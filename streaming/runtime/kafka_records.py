"""Fetched Kafka records whose header names are not UTF-8 are read, not fatal.

The broker stores a header name as any bytes (Java's clients decode them leniently); aiokafka decodes them
strictly while it iterates a fetched batch, so one such record raised ``UnicodeDecodeError`` in the feature
worker's fetch ("Drain messages raised", "Fetcher crashed"): the worker exited, and every restart met the
same record, for every partition of the worker (attack 15, finding 5).

:class:`MemoryRecords` is aiokafka's pure-Python reader of a fetch's batches whose v2 batches are read by
aiokafka's compiled reader as before, and, from the first record of a batch whose header name does not
decode, by its Python reader with header names decoded with ``surrogateescape`` (the bytes kept, as lone
surrogates). :func:`install` makes aiokafka's fetcher use it; the worker's consumer thread installs it
(:mod:`streaming.runtime.faust_fetch`). Such a name cannot be encoded back to UTF-8: what the worker forwards
carries it with U+FFFD for each byte that did not decode (:mod:`streaming.runtime.feature_forward`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record import default_records, memory_records

from streaming.errors import StreamingError

__all__ = ["MemoryRecords", "install"]


class _Lenient(bytearray):
    """A buffer whose slices decode leniently (what the Python reader decodes header names from)."""

    def __getitem__(self, index: Any) -> Any:
        got = super().__getitem__(index)
        return _Lenient(got) if isinstance(index, slice) else got

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self).decode(encoding, "surrogateescape")


class _LenientBatch(default_records._DefaultRecordBatchPy):
    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        buffer: Any = getattr(self, "_buffer")  # noqa: B009 (mypy cannot type aiokafka's attribute)
        if type(buffer) is not _Lenient:
            self._buffer = _Lenient(buffer)


class _Batch:
    """A v2 batch read by aiokafka's compiled reader (whole, in C: no Python call per record when iterated),
    or, if one of its records has a header name that does not decode, again from its start by the lenient
    one. aiokafka both iterates a batch and calls ``next`` on it (a control batch's marker)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._batch: Any = default_records.DefaultRecordBatch(raw)
        self._records: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:  # base_offset, is_control_batch, validate_crc, ...
        return getattr(self._batch, name)

    def _read(self) -> Iterator[Any]:
        if self._records is None:
            try:
                records = list(self._batch)
            except UnicodeDecodeError:
                self._batch = _LenientBatch(self._raw)
                records = list(self._batch)
            self._records = iter(records)
        return self._records

    def __iter__(self) -> Iterator[Any]:
        return self._read()

    def __next__(self) -> Any:
        return next(self._read())


class MemoryRecords(memory_records._MemoryRecordsPy):
    """aiokafka's reader of a fetch's batches, with each v2 batch read through :class:`_Batch`."""

    def next_batch(self, *args: Any, **kwargs: Any) -> Any:
        raw = self._next_slice
        if raw is not None and len(raw) >= self.MIN_SLICE and raw[self.MAGIC_OFFSET] >= 2:
            self._cache_next()
            return _Batch(raw)
        return super().next_batch(*args, **kwargs)  # none left, too short (it raises), or an old format


def install() -> None:
    """Make aiokafka's fetcher read fetches through :class:`MemoryRecords` (this process)."""
    if not hasattr(aiokafka_fetcher, "MemoryRecords"):  # aiokafka moved it: fail, not on a record later
        raise StreamingError("aiokafka's fetcher has no MemoryRecords: update kafka_records.py")
    aiokafka_fetcher.MemoryRecords = MemoryRecords
