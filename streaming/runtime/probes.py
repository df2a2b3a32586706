"""Probes shared by ``rivulet up`` (:mod:`streaming.runtime.stack`) and ``scripts/services``: where the
services are (the Kafka bootstrap and the Redis URL as :mod:`streaming.settings` parses them), whether a
port answers, and whether a recorded pid is still the process that wrote it (``psutil``, which guards
against pid reuse).
"""

from __future__ import annotations

import socket

import psutil

from streaming.settings import kafka_address, redis_address

__all__ = ["kafka_address", "process", "redis_address", "tcp_open"]


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Does something accept a TCP connection at ``host:port``?

    >>> tcp_open("127.0.0.1", 1, timeout=0.2)
    False
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process(pid: int | None, marker: str) -> psutil.Process | None:
    """The live process ``pid`` if its command line contains ``marker`` (a pid left by a crash can belong
    to another program by now); None when it is gone, a zombie, someone else's or another program.

    >>> import os
    >>> process(os.getpid(), "") is not None, process(os.getpid(), "no such program"), process(None, "")
    (True, None, None)
    """
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc if marker in " ".join(proc.cmdline()) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
