"""``qhybrid doctor``: what is installed and configured, as a report to paste into a bug report.

:func:`collect` gathers the facts (versions, fake backends, whether an IBM Quantum account is
configured, free disk space, known incompatibilities) and :func:`format_report` lays them out as
text. Nothing here contacts the network, and no token or instance is ever read into the report:
the account section says only whether the environment variables are set and which accounts
(name, channel) the runtime's saved-accounts file lists. Every section catches its own failures,
so the report is always produced.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import warnings
from pathlib import Path

from qhybrid import __version__
from qhybrid.errors import one_line, redact

#: Distribution names reported, in order (importlib.metadata names).
PACKAGES = ("qiskit", "qiskit-aer", "qiskit-machine-learning", "qiskit-ibm-runtime", "torch", "numpy", "scipy",
            "matplotlib", "pillow", "safetensors", "tqdm")
#: Environment variables of the runtime's account discovery; only "set" / "not set" is reported.
ACCOUNT_ENV_VARS = ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL")
#: Where qiskit-ibm-runtime 0.51 saves accounts (accounts.management._DEFAULT_ACCOUNT_CONFIG_JSON_FILE).
_FALLBACK_ACCOUNTS_FILE = os.path.join("~", ".qiskit", "qiskit-ibm.json")
TORCH_PIN = "2.13.0"
NOT_INSTALLED = "not installed"
FAKE_BACKEND_EXAMPLES = 5
_LABEL_WIDTH = 26


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED
    except Exception as exc:  # noqa: BLE001 - a broken installation is itself worth reporting
        return f"unreadable ({type(exc).__name__})"


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '2.13.0+cpu' -> (2, 13, 0); () if none."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _error(exc: BaseException) -> str:
    return one_line(exc, with_type=True, limit=200)


# --- sections ------------------------------------------------------------------------------------
def _system() -> dict:
    return {"version": __version__, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "executable": sys.executable,
            "platform": platform.platform()}


def _torch() -> dict:
    info: dict = {"version": _version("torch"), "cuda_build": None, "cuda_available": None, "threads": None,
                  "error": None}
    if info["version"] == NOT_INSTALLED:
        return info
    try:
        import torch

        info["cuda_build"] = torch.version.cuda
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["threads"] = int(torch.get_num_threads())
    except Exception as exc:  # noqa: BLE001
        info["error"] = _error(exc)
    return info


def _fake_backends() -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from qhybrid.quantum.primitives.aer import fake_backend_names

            names = fake_backend_names()
    except Exception as exc:  # noqa: BLE001
        return {"count": None, "examples": [], "error": _error(exc)}
    return {"count": len(names), "examples": names[:FAKE_BACKEND_EXAMPLES], "error": None}


def accounts_file() -> Path:
    """The saved-accounts file the installed qiskit-ibm-runtime reads (it follows $HOME)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from qiskit_ibm_runtime.accounts import management

        return Path(os.path.expanduser(management._DEFAULT_ACCOUNT_CONFIG_JSON_FILE))
    except Exception:  # noqa: BLE001 - not installed, or the constant moved: the documented place
        return Path(os.path.expanduser(_FALLBACK_ACCOUNTS_FILE))


def _account(secrets: set) -> dict:
    env = {}
    for var in ACCOUNT_ENV_VARS:
        value = os.environ.get(var)
        env[var] = "set" if value else "not set"
        if value and var != "QISKIT_IBM_CHANNEL":
            secrets.add(value)
    path = accounts_file()
    info: dict = {"environment": env, "accounts_file": str(path), "accounts_file_exists": path.is_file(),
                  "accounts": [], "error": None}
    if not info["accounts_file_exists"]:
        return info
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:  # noqa: BLE001 - never echo the file's content, only what went wrong
        info["error"] = f"cannot read it ({type(exc).__name__})"
        return info
    for name, entry in data.items():
        entry = entry if isinstance(entry, dict) else {}
        for key in ("token", "instance"):
            if isinstance(entry.get(key), str):
                secrets.add(entry[key])
        info["accounts"].append({
            "name": str(name),
            "channel": str(entry.get("channel")) if entry.get("channel") is not None else None,
            "default": bool(entry.get("is_default_account")),
            "token_saved": bool(entry.get("token")),
            "instance_saved": bool(entry.get("instance")),
        })
    return info


def _usage(folder: Path) -> dict:
    folder = folder.resolve()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return {"path": str(folder), "exists": folder.exists(), "free_bytes": None, "total_bytes": None,
                "error": _error(exc)}
    return {"path": str(folder), "exists": folder.exists(), "free_bytes": usage.free, "total_bytes": usage.total,
            "error": None}


def _disk(jobs_dir: str | Path) -> dict:
    return {"current_folder": _usage(Path.cwd()), "jobs_folder": _usage(Path(jobs_dir))}


def _check(level: str, check: str, detail: str) -> dict:
    return {"level": level, "check": check, "detail": detail}


def _incompatibilities(packages: dict, torch_info: dict) -> list[dict]:
    """Known incompatibilities, computed from the installed versions (level: ok, note, warning)."""
    checks = []
    qml, qiskit = packages.get("qiskit-machine-learning", NOT_INSTALLED), packages.get("qiskit", NOT_INSTALLED)
    name = "qiskit-machine-learning 0.9 needs qiskit >= 2.0"
    if qml == NOT_INSTALLED or qiskit == NOT_INSTALLED:
        missing = " and ".join(p for p, v in (("qiskit", qiskit), ("qiskit-machine-learning", qml))
                               if v == NOT_INSTALLED)
        checks.append(_check("warning", name, f"{missing} not installed; qhybrid needs both"))
    elif _release(qml)[:2] == (0, 9) and _release(qiskit) < (2, 0):
        checks.append(_check("warning", name, f"qiskit-machine-learning {qml} with qiskit {qiskit}: "
                                              "install qiskit >= 2.0 (qhybrid pins 2.6.2)"))
    else:
        checks.append(_check("ok", name, f"qiskit-machine-learning {qml}, qiskit {qiskit}"))

    torch_version = torch_info.get("version", NOT_INSTALLED)
    name = f"torch pinned to {TORCH_PIN}"
    if torch_version == NOT_INSTALLED:
        checks.append(_check("warning", name, f"torch not installed; install torch=={TORCH_PIN} (the CPU wheel)"))
    elif _release(torch_version) != _release(TORCH_PIN):
        checks.append(_check("warning", name, f"torch {torch_version} is installed; qhybrid is tested with "
                                              f"{TORCH_PIN}: install torch=={TORCH_PIN} (the CPU wheel)"))
    else:
        checks.append(_check("ok", name, f"torch {torch_version}"))
    if torch_version != NOT_INSTALLED:
        name = "a CUDA build of torch is not needed"
        if torch_info.get("cuda_build"):
            checks.append(_check("note", name, f"this torch is a CUDA {torch_info['cuda_build']} build; qhybrid runs "
                                               "on the CPU, and the CPU wheel is much smaller"))
        else:
            checks.append(_check("ok", name, "CPU build"))

    name = "torchvision beside this torch wheel is known to break"
    vision = _version("torchvision")
    if vision != NOT_INSTALLED:
        checks.append(_check("warning", name, f"torchvision {vision} is installed; qhybrid does not use it: "
                                              "pip uninstall torchvision"))
    elif importlib.util.find_spec("torchvision") is not None:
        checks.append(_check("warning", name, "a torchvision module is importable (without package metadata); "
                                              "qhybrid does not use it: remove it"))
    else:
        checks.append(_check("ok", name, "torchvision not installed"))

    pennylane = _version("pennylane")
    if pennylane != NOT_INSTALLED:
        checks.append(_check("note", "PennyLane is fine beside qhybrid",
                             f"PennyLane {pennylane} is installed; qhybrid never uses it"))
    return checks


def _scrub(value, secrets: set):
    """``value`` with every known secret (token, instance) blanked out of its strings."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def collect(jobs_dir: str | Path = "jobs") -> dict:
    """Everything the report shows, as plain JSON-able data. Never raises, never uses the network."""
    secrets: set[str] = set()
    info: dict = {}
    sections = (
        ("qhybrid", _system),
        ("packages", lambda: {name: _version(name) for name in PACKAGES}),
        ("torch", _torch),
        ("fake_backends", _fake_backends),
        ("ibm_quantum_account", lambda: _account(secrets)),
        ("disk", lambda: _disk(jobs_dir)),
    )
    for key, build in sections:
        try:
            info[key] = build()
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            info[key] = {"error": _error(exc)}
    try:
        info["known_incompatibilities"] = _incompatibilities(info.get("packages", {}), info.get("torch", {}))
    except Exception as exc:  # noqa: BLE001
        info["known_incompatibilities"] = [_check("warning", "checks failed", _error(exc))]
    return _scrub(info, secrets)


# --- text -----------------------------------------------------------------------------------------
def _gb(n) -> str:
    return "?" if n is None else f"{n / 1e9:.1f} GB"


def _row(label: str, value) -> str:
    return f"  {label:<{_LABEL_WIDTH}}{value}"


def format_report(info: dict) -> str:
    """The report as aligned text, one section per topic."""
    lines = ["qhybrid doctor: paste this into a bug report (tokens and instances are never shown)"]

    def section(title: str) -> None:
        lines.extend(["", title])

    def error_row(part: dict) -> None:
        if isinstance(part, dict) and part.get("error"):
            lines.append(_row("error", part["error"]))

    s = info.get("qhybrid", {})
    section("qhybrid")
    lines.append(_row("version", s.get("version", "?")))
    lines.append(_row("python", f"{s.get('python', '?')} ({s.get('implementation', '?')}, {s.get('executable', '?')})"))
    lines.append(_row("platform", s.get("platform", "?")))
    error_row(s)

    section("packages")
    for name, version in info.get("packages", {}).items():
        if name != "error":
            lines.append(_row(name, version))
    error_row(info.get("packages", {}))
    t = info.get("torch", {})
    if t.get("cuda_available") is not None:
        lines.append(_row("torch CUDA available", "yes" if t["cuda_available"] else "no")
                     + (f" (CUDA {t['cuda_build']} build)" if t.get("cuda_build") else " (CPU build)"))
        lines.append(_row("torch threads", t.get("threads")))
    error_row(t)

    f = info.get("fake_backends", {})
    section("fake backends (qiskit-ibm-runtime)")
    if f.get("count") is not None:
        lines.append(_row("available", f["count"]))
        more = ", ..." if f["count"] > len(f.get("examples", [])) else ""
        lines.append(_row("for example", ", ".join(f.get("examples", [])) + more))
    error_row(f)

    a = info.get("ibm_quantum_account", {})
    section("IBM Quantum account (read locally, no network call; values never shown)")
    for var, state in a.get("environment", {}).items():
        lines.append(_row(var, state))
    if "accounts_file" in a:
        lines.append(_row("saved-accounts file", f"{a['accounts_file']} "
                                                 f"({'exists' if a['accounts_file_exists'] else 'not found'})"))
    for acc in a.get("accounts", []):
        extras = ["default" if acc["default"] else None, "token saved" if acc["token_saved"] else "no token",
                  "instance saved" if acc["instance_saved"] else "no instance"]
        lines.append(_row(f"account {acc['name']!r}",
                          f"channel {acc['channel'] or '?'}; " + ", ".join(e for e in extras if e)))
    if a.get("accounts_file_exists") and not a.get("accounts") and not a.get("error"):
        lines.append(_row("accounts", "none listed in the file"))
    error_row(a)

    d = info.get("disk", {})
    section("disk space (free of total)")
    for key, label in (("current_folder", "current folder"), ("jobs_folder", "jobs folder")):
        u = d.get(key)
        if not u:
            continue
        where = u["path"] + ("" if u.get("exists") else " (not created yet)")
        value = f"{_gb(u.get('free_bytes'))} free of {_gb(u.get('total_bytes'))}  {where}"
        lines.append(_row(label, value if not u.get("error") else f"{where}: {u['error']}"))
    error_row(d)

    section("known incompatibilities")
    for c in info.get("known_incompatibilities", []):
        lines.append(f"  {c['level']:<8}{c['check']}: {c['detail']}")
    return "\n".join(lines)
