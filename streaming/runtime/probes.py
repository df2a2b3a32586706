"""Probes shared by ``rivulet up`` (:mod:`streaming.runtime.stack`) and ``scripts/services``: where the
services are (one parse of the Kafka bootstrap and of a Redis URL), whether a port answers, and whether a
recorded pid is still the process that wrote it (``psutil``, which guards against pid reuse).
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import psutil

__all__ = ["kafka_address", "process", "redis_address", "tcp_open"]

KAFKA_PORT = 9092
REDIS_PORT = 6379


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


def kafka_address(bootstrap: str) -> tuple[str, int]:
    """The first server of a Kafka bootstrap list as (host, port); Kafka's port when none is given.

    >>> kafka_address("kafka-1:29092, kafka-2:29092")
    ('kafka-1', 29092)
    >>> kafka_address("localhost")
    ('localhost', 9092)
    >>> kafka_address(":9092")
    ('127.0.0.1', 9092)
    """
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not port.isdigit():  # "localhost": Kafka's default port
        host, port = first, str(KAFKA_PORT)
    return host or "127.0.0.1", int(port)


def redis_address(url: str, default_port: int = REDIS_PORT) -> tuple[str, int]:
    """(host, port) of a Redis URL.

    >>> redis_address("redis://10.0.0.5:6380/0")
    ('10.0.0.5', 6380)
    >>> redis_address("redis://127.0.0.1", default_port=7001)
    ('127.0.0.1', 7001)
    """
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


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
