"""``qhybrid doctor``: what is installed and configured, as a report to paste into a bug report.

:func:`collect` gathers the facts (versions and how they compare with the tested set, fake
backends, whether an IBM Quantum account is configured, free disk space, known incompatibilities)
and :func:`format_report` lays them out as text. Nothing here contacts the network, and no token or
instance is ever read into the report: the account section says only whether the environment
variables are set and which accounts (name, channel) the runtime's saved-accounts file lists.
Every section catches its own failures, so the report is always produced.
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
NOT_INSTALLED = "not installed"

# --- the tested set ------------------------------------------------------------------------------
#: Where :data:`TESTED_VERSIONS` comes from: the repository's lock file, which ``make setup`` installs
#: with ``-c`` (the file itself is not part of the installed package, so its versions are shipped here).
LOCK_FILE = "constraints.txt"
#: The tested set: every distribution in :data:`LOCK_FILE` with its exact version (normalized names).
#: tests/test_doctor.py checks that this and the lock file agree, so change both together.
TESTED_VERSIONS: dict[str, str] = {
    "annotated-types": "0.8.0", "antlr4-python3-runtime": "4.13.2", "certifi": "2026.10.19.post1", "cffi": "2.1.1",
    "charset-normalizer": "3.5.3", "cloudpickle": "3.1.3", "contourpy": "1.3.3", "cryptography": "50.0.2",
    "cycler": "0.12.1", "dill": "0.4.1", "filelock": "4.3.1", "fonttools": "4.68.0", "fsspec": "2026.9.0",
    "hypothesis": "6.170.17", "ibm-cloud-sdk-core": "3.28.0", "ibm-platform-services": "0.77.1",
    "ibm-quantum-schemas": "0.13.20261016", "idna": "3.20", "imageio": "2.38.2", "iniconfig": "2.3.1",
    "jinja2": "3.1.6", "joblib": "1.6.0", "kiwisolver": "1.5.1", "lazy-loader": "0.6", "markupsafe": "3.0.4",
    "matplotlib": "3.11.2", "mpmath": "1.3.0", "narwhals": "2.29.0", "networkx": "3.6.1", "numpy": "2.4.6",
    "openqasm3": "1.0.1", "orjson": "3.13.0", "packaging": "26.4", "pillow": "13.0.0", "pluggy": "1.7.0",
    "psutil": "7.2.2", "pybase64": "1.5.1", "pycparser": "3.12", "pydantic": "2.14.4", "pydantic-core": "2.50.5",
    "pygments": "2.21.0", "pyjwt": "2.15.1", "pylatexenc": "2.11", "pyparsing": "3.3.3", "pyspnego": "0.12.4",
    "pytest": "9.2.0", "python-dateutil": "2.9.0.post0", "qiskit": "2.6.2", "qiskit-aer": "0.18.2",
    "qiskit-ibm-runtime": "0.51.0", "qiskit-machine-learning": "0.9.1", "qiskit-mitigation": "0.1.1",
    "qiskit-qasm3-import": "0.6.0", "requests": "2.34.2", "requests-ntlm": "1.3.0", "rustworkx": "0.18.1",
    "safetensors": "0.8.0", "samplomatic": "0.21.0", "scikit-image": "0.26.0", "scikit-learn": "1.9.1",
    "scipy": "1.17.1", "setuptools": "84.2.1", "six": "1.17.0", "sortedcontainers": "2.4.0", "stevedore": "5.10.0",
    "sympy": "1.14.0", "threadpoolctl": "3.8.0", "tifffile": "2026.3.3", "torch": "2.13.0", "tqdm": "4.70.1",
    "typing-extensions": "4.16.0", "typing-inspection": "0.4.5", "urllib3": "2.8.0",
}
#: The Python the tested set is tested on (``requires-python`` allows newer ones, untested).
TESTED_PYTHON = "3.11"
PYTHON_RANGE = ">=3.11"
#: qhybrid's own requirements and their supported ranges, as in pyproject.toml's ``dependencies``
#: (tests/test_doctor.py checks that the two agree and that every tested version lies in its range).
SUPPORTED_RANGES: dict[str, str] = {
    "qiskit": ">=2.4,<3", "qiskit-aer": ">=0.17,<0.19", "qiskit-machine-learning": ">=0.9,<0.10",
    "qiskit-ibm-runtime": ">=0.50,<1", "torch": ">=2.5,<3", "numpy": ">=2.0,<3", "scipy": ">=1.13",
    "matplotlib": ">=3.8", "pillow": ">=10.0", "tqdm": ">=4.64", "safetensors": ">=0.4", "pylatexenc": ">=2.10",
    "packaging": ">=23.0",
}
#: The ``dev`` extra (only the tests need it): not installed is fine, a version outside its range is not.
DEV_RANGES: dict[str, str] = {"pytest": ">=8.0", "hypothesis": ">=6.100", "scikit-image": ">=0.24"}
OTHERS_SHOWN = 8
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


def _same_public(a, b) -> bool:
    """The same version apart from a local label: torch 2.13.0+cpu is the tested 2.13.0."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(a)).public == Version(str(b)).public
    except InvalidVersion:
        return False


def _compare(package: str, installed: str, tested: str | None, supported: str, *, optional: bool = False,
             same=None) -> dict:
    """One row of the tested-set check: ok (the tested version), note (another version within the
    supported range), warning (outside it, not installed, or unreadable)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    row = {"package": package, "installed": installed, "tested": tested, "supported": supported,
           "level": "ok", "detail": ""}
    tested_text = f"tested {tested}" if tested else "no tested version"
    if installed == NOT_INSTALLED:
        if optional:
            row["detail"] = "only the tests need it (`make setup` installs it)"
        else:
            row.update(level="warning", detail=f"qhybrid needs {package}{supported} ({tested_text})")
        return row
    try:
        version = Version(installed)
    except InvalidVersion:
        row.update(level="warning", detail=f"version {installed!r} cannot be compared with {supported} "
                                           f"({tested_text})")
        return row
    if not SpecifierSet(supported).contains(version, prereleases=True):
        if package == "python":
            hint = f"use Python {tested}"
        else:
            hint = f"pip install {package}=={tested}" if tested else f"pip install '{package}{supported}'"
        row.update(level="warning", detail=f"outside the supported range {supported} ({tested_text}): {hint}")
        return row
    same = same or _same_public
    if tested is None:
        row.update(level="note", detail=f"within the supported range {supported}; no tested version")
    elif same(version, Version(tested)):
        what = f"Python {tested}" if package == "python" else "version"
        row["detail"] = f"the tested {what} (supported {supported})"
    else:
        direction = "newer" if version > Version(tested) else "older"
        row.update(level="note", detail=f"{direction} than the tested {tested}, within the supported range "
                                        f"{supported}")
    return row


def tested_set(installed: dict, python: str | None = None, *, tested: dict | None = None,
               supported: dict | None = None, dev: dict | None = None) -> list[dict]:
    """The installed versions against the tested set, one row per requirement (level ok, note, warning).

    ``installed`` maps distribution names to installed versions (:data:`NOT_INSTALLED` if absent);
    ``python`` is the running Python's version. Rows: Python, then qhybrid's requirements
    (:data:`SUPPORTED_RANGES`) and the dev extra (:data:`DEV_RANGES`) against their tested versions
    and ranges, then one row for the other locked distributions (the requirements' own requirements),
    which have no range of qhybrid's: an installed one at another version is a note, listed in
    ``differ``; absent ones are listed in ``not_installed`` (pip did not need them).
    """
    tested = TESTED_VERSIONS if tested is None else tested
    supported = SUPPORTED_RANGES if supported is None else supported
    dev = DEV_RANGES if dev is None else dev
    python = platform.python_version() if python is None else python
    rows = [_compare("python", python, TESTED_PYTHON, PYTHON_RANGE,
                     same=lambda a, b: a.release[:2] == b.release[:2])]
    for name, spec in supported.items():
        rows.append(_compare(name, installed.get(name, NOT_INSTALLED), tested.get(name), spec))
    for name, spec in dev.items():
        rows.append(_compare(name, installed.get(name, NOT_INSTALLED), tested.get(name), spec, optional=True))

    # the requirements' own requirements: pip picked them for the installed requirements, so one
    # that is absent is not needed here (the dev extra's, or those of another requirement version)
    others = sorted(set(tested) - set(supported) - set(dev))
    differ, absent = [], []
    for name in others:
        version = installed.get(name, NOT_INSTALLED)
        if version == NOT_INSTALLED:
            absent.append(name)
        elif not _same_public(version, tested[name]):
            differ.append({"package": name, "installed": version, "tested": tested[name]})
    if not differ:
        detail, level = "the installed ones at the tested versions", "ok"
    else:
        shown = ", ".join(f"{d['package']} {d['installed']} (tested {d['tested']})" for d in differ[:OTHERS_SHOWN])
        more = f", and {len(differ) - OTHERS_SHOWN} more" if len(differ) > OTHERS_SHOWN else ""
        detail, level = f"{len(differ)} differ from the tested set: {shown}{more}", "note"
    if absent:
        detail += f"; {len(absent)} not installed (not needed by the installed requirements)"
    rows.append({"package": f"{len(others)} other locked packages", "installed": None, "tested": None,
                 "supported": None, "level": level, "detail": detail, "differ": differ, "not_installed": absent})
    return rows


def _installed_for_tested_set() -> dict:
    return {name: _version(name) for name in sorted({*TESTED_VERSIONS, *SUPPORTED_RANGES, *DEV_RANGES})}


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
                                              f"install qiskit >= 2.0 (tested: {TESTED_VERSIONS['qiskit']})"))
    else:
        checks.append(_check("ok", name, f"qiskit-machine-learning {qml}, qiskit {qiskit}"))

    # torch's version against the tested set and the supported range: the "tested set" section
    torch_version = torch_info.get("version", NOT_INSTALLED)
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
        ("tested_set", lambda: tested_set(_installed_for_tested_set())),
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

    section(f"tested set (installed against {LOCK_FILE}'s versions and pyproject.toml's ranges)")
    rows = info.get("tested_set", [])
    if isinstance(rows, list):
        for r in rows:
            installed = "" if r.get("installed") is None else r["installed"]
            lines.append(f"  {r['level']:<8}{r['package']:<{_LABEL_WIDTH}}{installed:<14}{r['detail']}")
    else:
        error_row(rows)

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
