"""Rivulet's real-time scoring API (FastAPI). Built by the "Real-time scoring API" issue."""

__all__: list[str] = []
