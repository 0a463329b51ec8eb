"""The one config style: frozen dataclasses that validate themselves and travel as JSON.

Every config in qhybrid (circuit, models, scheduler, training, evaluation, workflows) is a frozen
``@dataclass`` that inherits :class:`Config`:

* ``__post_init__`` checks every field and raises ``ValueError`` naming the field and what is
  allowed; a default that depends on another field (a VAE's latent size follows its image size)
  is filled there once, so a config never changes after it is made;
* ``replace(**changes)`` makes a changed copy (validated again); nothing mutates a config;
* ``to_dict`` / ``from_dict`` (unknown fields are named, not a ``TypeError``) and
  ``to_json`` / ``from_json``: the form saved in ``config.json`` next to the weights.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound="Config")


def config_from_dict(cls: type[T], data: Any) -> T:
    """Build a config dataclass from a dict, naming unknown fields instead of a TypeError."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Config:
    """Base of qhybrid's config dataclasses (subclasses are ``@dataclass(frozen=True)``)."""

    def _fill(self, name: str, value: Any) -> None:
        """Set a derived default once, in ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    def replace(self: C, **changes) -> C:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: Any) -> C:
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cls.__name__}: not valid JSON ({exc})") from None
        return cls.from_dict(data)
