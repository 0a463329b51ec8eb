"""Shared helpers for the config dataclasses saved next to weights (JSON in, JSON out)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Any) -> T:
    """Build a config dataclass from a dict, naming unknown fields instead of a TypeError."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**data)
