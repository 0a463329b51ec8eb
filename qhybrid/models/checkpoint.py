"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``training_state.pt`` for resume).

* ``model.safetensors`` holds the weights, with the same JSON header embedded in its metadata;
* ``config.json`` is the human-readable header: format version, kind (``vae``, ``ldm``, ...),
  the model's config dataclass, and the SHA-256 of ``model.safetensors``, checked on load;
* ``training_state.pt`` (optional) has everything a resumed run needs in one file: model and
  optimiser state, step/epoch counters, loss history, RNG states.

Each file is written atomically (temp file + ``os.replace``), training state first and
``config.json`` last, so an interrupted save never leaves a file that a later run trusts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qhybrid import __version__, io
from qhybrid.errors import InputError, one_line, param

FORMAT = "qhybrid-checkpoint"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "training_state.pt"


class CheckpointError(InputError):
    """A path is not a (valid) checkpoint of the expected kind; the message says what to do."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(folder: str | Path, kind: str, config: dict, state_dict: dict[str, torch.Tensor],
                    extra: dict | None = None, training_state: dict | None = None) -> Path:
    """Write a checkpoint folder (see the module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if training_state is not None:
        with io.atomic_path(folder / STATE_NAME) as tmp:
            torch.save(training_state, tmp)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "qhybrid_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "extra": extra or {},
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with io.atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"qhybrid": json.dumps(header)})
    header["weights_sha256"] = sha256_file(folder / WEIGHTS_NAME)
    io.write_json(folder / CONFIG_NAME, header)
    return folder


def read_header(folder: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """Read and check ``config.json`` of a checkpoint folder (without loading the weights)."""
    folder = Path(folder)
    kinds = (kind,) if isinstance(kind, str) else kind
    what = f"a {' or '.join(kinds)} checkpoint" if kinds else "a checkpoint"
    if not folder.exists():
        raise CheckpointError(f"{folder} does not exist; expected {what} folder")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; expected {what} folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    config_path = folder / CONFIG_NAME
    if not config_path.exists():
        raise CheckpointError(f"{folder} is not {what}: it has no {CONFIG_NAME}")
    try:
        header = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a qhybrid checkpoint config; expected {what}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} has checkpoint format version {header.get('format_version')}; this qhybrid "
            f"reads version {FORMAT_VERSION}"
        )
    if kinds and header.get("kind") not in kinds:
        raise CheckpointError(f"{folder} is a {header.get('kind')} checkpoint; expected {what}")
    return header


def load_checkpoint(folder: str | Path, kind: str | tuple[str, ...] | None = None
                    ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(header, state_dict)`` after checking format, kind and content hash."""
    folder = Path(folder)
    header = read_header(folder, kind)
    weights = folder / WEIGHTS_NAME
    if not weights.exists():
        raise CheckpointError(f"{folder} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the checkpoint is incomplete")
    digest = sha256_file(weights)
    if header.get("weights_sha256") != digest:
        raise CheckpointError(
            f"{weights} does not match the hash in {CONFIG_NAME}: the file was modified, truncated "
            f"or only half-written; if training was interrupted, continue it with {param('resume', True)}"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    return header, state


class FromCheckpoint:
    """Mixin for the networks that load themselves: ``Model.from_checkpoint(folder)``.

    A subclass names its checkpoint ``kind`` and its ``config_class`` (a :class:`qhybrid.config.Config`)
    and is built as ``Model(config)``; :meth:`config_dict` picks the model's config out of the header
    when the header holds more (an LDM's header also holds the scheduler's). The header (training
    metrics, hashes) stays available as ``model.checkpoint_header``.
    """

    checkpoint_kind: str = ""
    config_class: type = dict

    @classmethod
    def config_dict(cls, header: dict) -> dict:
        return header["config"]

    @classmethod
    def from_checkpoint(cls, folder: str | Path):
        """The model in ``folder`` in eval mode; a wrong, damaged or mismatched checkpoint is one
        :class:`CheckpointError` line naming the folder."""
        header, state = load_checkpoint(folder, cls.checkpoint_kind)
        try:
            config = cls.config_class.from_dict(cls.config_dict(header))
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{folder}: the {cls.checkpoint_kind} config in {CONFIG_NAME} is invalid "
                                  f"({one_line(exc)})") from None
        model = cls(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{folder}: the weights do not fit the {cls.checkpoint_kind} config "
                                  f"({one_line(exc)})") from None
        model.checkpoint_header = header
        return model.eval()


def load_training_state(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / STATE_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise CheckpointError(f"cannot read {path} to resume ({one_line(exc)}); start again without "
                              f"{param('resume', True)}") from None
