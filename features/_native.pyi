"""Types of the compiled in-order step (features/_native.pyx, built by setup.py where a C compiler is)."""

from collections.abc import Callable
from typing import Any

class Step:
    def __init__(self, engine: Any, generic: Callable[..., Any], safe: Callable[[Any, Any], Any]) -> None: ...
    def apply(
        self, state: Any, event: Any, check: Callable[[dict[str, Any]], object] | None = None
    ) -> dict[str, Any]: ...

def grow(a: list[Any], start: int, x: float) -> None: ...
