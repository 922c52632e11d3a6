"""Fixtures shared by the storage tests: `postgres_url` (tests/postgres.py)."""

from __future__ import annotations

from ..postgres import postgres_url

__all__ = ["postgres_url"]
