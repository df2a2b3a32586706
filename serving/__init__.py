"""Rivulet's real-time scoring API (FastAPI): ``create_app(settings)``; run it with ``rivulet serve``."""

from serving.app import create_app

__all__ = ["create_app"]
