"""``qhybrid doctor``: the report for bug reports, run for real; account details never leak."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
from cli_helpers import run_process

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


def test_incompatibility_rules():
    from qhybrid.workflows.doctor import NOT_INSTALLED, _incompatibilities

    def levels(packages, torch):
        return {c["check"]: c["level"] for c in _incompatibilities(packages, torch)}

    good = levels({"qiskit": "2.6.2", "qiskit-machine-learning": "0.9.1"}, {"version": "2.13.0+cpu", "cuda_build": None})
    assert good["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "ok"
    assert good["torch pinned to 2.13.0"] == "ok"
    assert good["a CUDA build of torch is not needed"] == "ok"
    bad = levels({"qiskit": "1.4.3", "qiskit-machine-learning": "0.9.0"}, {"version": "2.12.1", "cuda_build": "12.8"})
    assert bad["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "warning"
    assert bad["torch pinned to 2.13.0"] == "warning"
    assert bad["a CUDA build of torch is not needed"] == "note"
    missing = levels({"qiskit": NOT_INSTALLED, "qiskit-machine-learning": "0.9.1"}, {"version": NOT_INSTALLED})
    assert missing["qiskit-machine-learning 0.9 needs qiskit >= 2.0"] == "warning"
    assert missing["torch pinned to 2.13.0"] == "warning"


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
