"""``qhybrid doctor``: the report for bug reports, run for real; account details never leak."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import run_process
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "doctor-SECRET-token-8c1f7e2a9b"
INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/doctorSECRETinstance77::"
SAVED_TOKEN = "saved-SECRET-token-4d5e6f708192"
SAVED_INSTANCE = "crn:v1:bluemix:public:quantum-computing:eu-de:a/savedSECRETinstance55::"

# save_account in a child process whose every way to the network raises: it must write the file
# without connecting anywhere (the check the report's own "no network call" rests on)
_SAVE_OFFLINE = r"""
import socket, sys

def refuse(*args, **kwargs):
    raise AssertionError(f"network use while saving an account: {args[:1]}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from qiskit_ibm_runtime import QiskitRuntimeService

QiskitRuntimeService.save_account(token=sys.argv[1], instance=sys.argv[2], channel="ibm_quantum_platform",
                                  name="doctor-test-account", set_as_default=True)
QiskitRuntimeService.save_account(token=sys.argv[1] + "-cloud", channel="ibm_cloud", name="second-account")
from qiskit_ibm_runtime.accounts import management
print(management._DEFAULT_ACCOUNT_CONFIG_JSON_FILE)
"""


def _env(home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM_")}
    env.update(HOME=str(home), **extra)
    return env


@pytest.fixture(scope="module")
def saved_home(tmp_path_factory):
    """A HOME whose runtime saved-accounts file holds two accounts, written by the runtime itself."""
    home = tmp_path_factory.mktemp("home")
    proc = subprocess.run([sys.executable, "-c", _SAVE_OFFLINE, SAVED_TOKEN, SAVED_INSTANCE], capture_output=True,
                          text=True, timeout=300, env=_env(home), cwd=home)
    assert proc.returncode == 0, proc.stderr
    path = home / ".qiskit" / "qiskit-ibm.json"
    assert proc.stdout.strip() == str(path)
    saved = json.loads(path.read_text())
    assert saved["doctor-test-account"]["token"] == SAVED_TOKEN  # the real format, with the secret in it
    assert saved["doctor-test-account"]["instance"] == SAVED_INSTANCE
    return home


@pytest.mark.slow  # 2.7 s; the fast suite runs doctor in the secret-handling tests
def test_report_lists_versions_and_fake_backends(tmp_path):
    from qhybrid.quantum.primitives.aer import fake_backend_names

    proc = run_process("doctor", env=_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for dist in ("qiskit", "torch", "qiskit-machine-learning", "qiskit-ibm-runtime"):
        version = importlib.metadata.version(dist)
        assert any(ln.split() == [dist, version] for ln in lines), (dist, version, proc.stdout)
    count = len(fake_backend_names())
    assert any(ln.split() == ["available", str(count)] for ln in lines), proc.stdout
    for title in ("packages", "known incompatibilities", "disk space (free of total)"):
        assert title in lines
    assert any(ln.startswith("tested set (") for ln in lines), proc.stdout
    qiskit = importlib.metadata.version("qiskit")
    assert any(ln.split()[1:3] == ["qiskit", qiskit] for ln in lines if ln.split()[:1] in (["ok"], ["note"])), \
        proc.stdout
    assert "QISKIT_IBM_TOKEN          not set" in proc.stdout
    assert "(not found)" in proc.stdout  # the fresh HOME has no saved accounts


def test_token_variable_is_reported_set_but_never_shown(tmp_path):
    proc = run_process("doctor", env=_env(tmp_path, QISKIT_IBM_TOKEN=TOKEN, QISKIT_IBM_INSTANCE=INSTANCE), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "QISKIT_IBM_TOKEN" in ln)
    assert row.split() == ["QISKIT_IBM_TOKEN", "set"]
    assert any(ln.split() == ["QISKIT_IBM_INSTANCE", "set"] for ln in proc.stdout.splitlines())
    assert any(ln.split() == ["QISKIT_IBM_CHANNEL", "not", "set"] for ln in proc.stdout.splitlines())
    for secret in (TOKEN, INSTANCE, "SECRET"):
        assert secret not in proc.stdout + proc.stderr


def test_saved_accounts_show_name_and_channel_but_not_token(saved_home):
    env = _env(saved_home, QISKIT_IBM_TOKEN=TOKEN)
    proc = run_process("doctor", env=env, cwd=saved_home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{saved_home / '.qiskit' / 'qiskit-ibm.json'} (exists)" in out
    rows = {ln.split("'")[1]: ln for ln in out.splitlines() if ln.strip().startswith("account '")}
    assert set(rows) == {"doctor-test-account", "second-account"}
    assert "channel ibm_quantum_platform" in rows["doctor-test-account"] and "default" in rows["doctor-test-account"]
    assert "token saved" in rows["doctor-test-account"] and "instance saved" in rows["doctor-test-account"]
    assert "channel ibm_cloud" in rows["second-account"] and "no instance" in rows["second-account"]
    for secret in (SAVED_TOKEN, SAVED_INSTANCE, TOKEN, "SECRET"):
        assert secret not in out + proc.stderr


def test_json_parses_and_holds_no_secret(saved_home):
    proc = run_process("doctor", "--json", env=_env(saved_home, QISKIT_IBM_TOKEN=TOKEN), cwd=saved_home)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert "SECRET" not in proc.stdout
    assert info["packages"]["qiskit"] == importlib.metadata.version("qiskit")
    assert info["packages"]["torch"] == importlib.metadata.version("torch")
    assert info["ibm_quantum_account"]["environment"] == {
        "QISKIT_IBM_TOKEN": "set", "QISKIT_IBM_INSTANCE": "not set", "QISKIT_IBM_CHANNEL": "not set"}
    accounts = {a["name"]: a for a in info["ibm_quantum_account"]["accounts"]}
    assert accounts["doctor-test-account"] == {"name": "doctor-test-account", "channel": "ibm_quantum_platform",
                                               "default": True, "token_saved": True, "instance_saved": True}
    assert info["fake_backends"]["count"] > 0
    assert info["disk"]["current_folder"]["free_bytes"] > 0
    assert {c["level"] for c in info["known_incompatibilities"]} <= {"ok", "note", "warning"}
    rows = {r["package"]: r for r in info["tested_set"]}
    assert rows["qiskit"]["installed"] == importlib.metadata.version("qiskit")
    assert rows["qiskit"]["supported"] and rows["qiskit"]["tested"]
    assert rows["torch"]["installed"] == importlib.metadata.version("torch")
    # the environment the tests run in (make setup: pyproject's ranges, -c constraints.txt) is in range
    assert [r for r in info["tested_set"] if r["level"] == "warning"] == []


def test_incompatibility_rules():
    from qhybrid.workflows.doctor import NOT_INSTALLED, _incompatibilities

    def levels(packages, torch):
        return {c["check"]: c["level"] for c in _incompatibilities(packages, torch)}

    good = levels({"qiskit": "2.6.2", "qiskit-machine-learning": "0.9.1"}, {"version": "2.13.0+cpu", "cuda_build": None})
    assert good["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "ok"
    assert good["a CUDA build of torch is not needed"] == "ok"
    assert not any("pinned" in check for check in good)  # torch's version: the tested-set section
    bad = levels({"qiskit": "1.4.3", "qiskit-machine-learning": "0.9.0"}, {"version": "2.12.1", "cuda_build": "12.8"})
    assert bad["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "warning"
    assert bad["a CUDA build of torch is not needed"] == "note"
    missing = levels({"qiskit": NOT_INSTALLED, "qiskit-machine-learning": "0.9.1"}, {"version": NOT_INSTALLED})
    assert missing["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "warning"


def test_torchvision_is_warned_about_and_pennylane_noted(monkeypatch):
    from qhybrid.workflows import doctor

    real = doctor._version
    fake = {"torchvision": "0.28.0", "pennylane": "0.45.1"}
    monkeypatch.setattr(doctor, "_version", lambda dist: fake.get(dist) or real(dist))
    checks = {c["check"]: c for c in doctor._incompatibilities(
        {"qiskit": "2.6.2", "qiskit-machine-learning": "0.9.1"}, {"version": "2.13.0", "cuda_build": None})}
    vision = checks["torchvision beside this torch wheel is known to break"]
    assert vision["level"] == "warning" and "0.28.0" in vision["detail"]
    assert checks["PennyLane is fine beside qhybrid"]["level"] == "note"
    monkeypatch.setattr(doctor, "_version", lambda dist: doctor.NOT_INSTALLED if dist in fake else real(dist))
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None)
    checks = {c["check"]: c for c in doctor._incompatibilities({}, {"version": "2.13.0"})}
    assert checks["torchvision beside this torch wheel is known to break"]["level"] == "ok"
    assert "PennyLane is fine beside qhybrid" not in checks


# --- the tested set: constraints.txt, the versions shipped in the package, pyproject.toml's ranges ---
def _lock() -> dict[str, str]:
    """constraints.txt as {normalized name: version}; every line an exact pin."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        assert match, f"not an exact pin in constraints.txt: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match.group(2)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_lock_file_and_shipped_tested_set_agree():
    from qhybrid.workflows.doctor import TESTED_VERSIONS

    lock = _lock()
    assert lock == TESTED_VERSIONS
    assert lock["torch"] == "2.13.0"  # the CPU wheel on the CI disk (==2.13.0 accepts 2.13.0+cpu)


def test_pyproject_ranges_hold_every_locked_version():
    from qhybrid.workflows.doctor import (
        DEV_RANGES,
        PYTHON_RANGE,
        SUPPORTED_RANGES,
        TESTED_PYTHON,
    )

    project, lock = _pyproject(), _lock()
    runtime = [Requirement(r) for r in project["dependencies"]]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    for req in runtime + dev:
        name = canonicalize_name(req.name)
        assert name in lock, f"{name} is a requirement but not in constraints.txt"
        assert req.specifier.contains(lock[name], prereleases=True), (str(req), lock[name])
        assert all(s.operator not in ("==", "===") for s in req.specifier), f"{req}: a range, not a pin"
    # the ranges doctor ships are pyproject's
    assert {canonicalize_name(r.name): SpecifierSet(str(r.specifier)) for r in runtime} == \
        {n: SpecifierSet(s) for n, s in SUPPORTED_RANGES.items()}
    assert {canonicalize_name(r.name): SpecifierSet(str(r.specifier)) for r in dev} == \
        {n: SpecifierSet(s) for n, s in DEV_RANGES.items()}
    assert SpecifierSet(project["requires-python"]) == SpecifierSet(PYTHON_RANGE)
    assert SpecifierSet(PYTHON_RANGE).contains(TESTED_PYTHON + ".0")


def test_make_setup_installs_the_lock_file():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule, "no $(STAMP) rule in the Makefile"
    assert {"pyproject.toml", "constraints.txt"} <= set(rule.group(1).split())
    assert re.search(r"pip install .*-e '\.\[dev\]' -c constraints\.txt", rule.group(2)), rule.group(2)


def test_tested_set_levels_from_given_versions():
    from qhybrid.workflows.doctor import NOT_INSTALLED, tested_set

    tested = {"qiskit": "2.6.2", "torch": "2.13.0", "pytest": "9.2.0", "dill": "0.4.1", "six": "1.17.0"}
    supported = {"qiskit": ">=2.3,<3", "torch": ">=2.5,<3"}
    dev = {"pytest": ">=8.0"}

    def rows(installed, python="3.11.7"):
        found = tested_set(installed, python, tested=tested, supported=supported, dev=dev)
        return {r["package"]: r for r in found}

    same = rows({"qiskit": "2.6.2", "torch": "2.13.0+cpu", "pytest": "9.2.0", "dill": "0.4.1", "six": "1.17.0"})
    assert {n: r["level"] for n, r in same.items()} == {
        "python": "ok", "qiskit": "ok", "torch": "ok", "pytest": "ok", "2 other locked packages": "ok"}
    assert same["torch"]["installed"] == "2.13.0+cpu" and same["torch"]["tested"] == "2.13.0"

    moved = rows({"qiskit": "2.4.1", "torch": "2.14.1", "pytest": NOT_INSTALLED, "dill": "0.3.9", "six": "1.17.0"},
                 python="3.12.4")
    assert moved["qiskit"]["level"] == "note" and "older than the tested 2.6.2" in moved["qiskit"]["detail"]
    assert moved["torch"]["level"] == "note" and "newer than the tested 2.13.0" in moved["torch"]["detail"]
    assert ">=2.5,<3" in moved["torch"]["detail"]
    assert moved["python"]["level"] == "note"
    assert moved["pytest"]["level"] == "ok"  # the dev extra may be absent
    others = moved["2 other locked packages"]
    assert others["level"] == "note" and others["differ"] == [
        {"package": "dill", "installed": "0.3.9", "tested": "0.4.1"}]

    outside = rows({"qiskit": "1.4.3", "torch": "3.0.0", "pytest": "7.4.0", "dill": "0.4.1"}, python="3.10.12")
    for name in ("qiskit", "torch", "pytest", "python"):
        assert outside[name]["level"] == "warning", outside[name]
    assert "outside the supported range >=2.3,<3" in outside["qiskit"]["detail"]
    assert "qiskit==2.6.2" in outside["qiskit"]["detail"]
    others = outside["2 other locked packages"]  # one not installed: pip did not need it, not a difference
    assert others["level"] == "ok" and others["differ"] == [] and others["not_installed"] == ["six"]

    absent = rows({"pytest": "9.2.0"})
    assert absent["qiskit"]["level"] == absent["torch"]["level"] == "warning"
    assert rows({"qiskit": "unreadable (OSError)", "torch": "2.13.0"})["qiskit"]["level"] == "warning"


def test_tested_set_defaults_to_the_shipped_versions():
    from qhybrid.workflows.doctor import (
        SUPPORTED_RANGES,
        TESTED_VERSIONS,
        format_report,
        tested_set,
    )

    installed = dict(TESTED_VERSIONS, torch=TESTED_VERSIONS["torch"] + "+cpu")
    assert {r["level"] for r in tested_set(installed, "3.11.7")} == {"ok"}
    installed["qiskit"] = "1.4.3"
    installed["numpy"] = "99.0"
    found = tested_set(installed, "3.11.7")
    assert {r["package"] for r in found if r["level"] == "warning"} == {"qiskit", "numpy"}
    assert len(found) == 1 + len(SUPPORTED_RANGES) + 3 + 1
    text = format_report({"tested_set": found})
    assert any(ln.split()[:3] == ["warning", "qiskit", "1.4.3"] for ln in text.splitlines()), text
