"""Noise studies a researcher can trust: the error budget of ``circuits inspect``, version-2
snapshots that keep the Target calibration (and so the live backend's layout), the snapshot /
backend mismatch, the QASM 3 export with trained weights, and the cached ``qhybrid backends``."""

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, run
from qiskit import qasm3
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit.transpiler import CouplingMap, generate_preset_pass_manager

from qhybrid.cli import backend_cache
from qhybrid.errors import InputError
from qhybrid.quantum import CircuitSpec, build_circuit, noise_snapshots
from qhybrid.quantum.calibration import calibration_of, target_from_calibration
from qhybrid.quantum.inspection import inspect_circuit
from qhybrid.quantum.noise_snapshots import load_snapshot, write_snapshot
from qhybrid.quantum.primitives.aer import (
    IsaProgram,
    fake_backend,
    noise_source_for_backend,
)

SPEC = CircuitSpec(num_qubits=4, reps=2)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test here keeps ``qhybrid backends``' cache out of the user's home."""
    monkeypatch.setenv("QHYBRID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def version_1(path, tmp_path):
    """The same snapshot as format version 1 wrote it: no Target calibration."""
    data = json.loads(path.read_text())
    del data["calibration"]
    data["format_version"] = 1
    old = tmp_path / f"v1-{path.name}"
    old.write_text(json.dumps(data))
    return old


# --- the Target as JSON -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["fake_athens", "fake_boston"])  # fake_boston: custom measure_2/reset_2
def test_target_rebuilt_from_json_calibration_equals_the_backends(backend):
    live = fake_backend(backend).target
    rebuilt = target_from_calibration(json.loads(json.dumps(calibration_of(fake_backend(backend), None))))
    assert list(rebuilt.operation_names) == list(live.operation_names)
    assert (rebuilt.dt, rebuilt.granularity, rebuilt.min_length) == (live.dt, live.granularity, live.min_length)
    for name in live.operation_names:
        assert list(rebuilt[name]) == list(live[name]), name
        for qargs, props in live[name].items():
            got = rebuilt[name][qargs]
            assert (got is None) == (props is None), (name, qargs)
            if props is not None:
                assert (got.error, got.duration) == (props.error, props.duration), (name, qargs)
    assert [(q.t1, q.t2, q.frequency) for q in rebuilt.qubit_properties] == \
        [(q.t1, q.t2, q.frequency) for q in live.qubit_properties]


# --- version-2 snapshots: the live layout -------------------------------------------------------
@pytest.mark.slow  # keeps make test-fast near 3 min; make test runs it
def test_version_2_snapshot_transpiles_to_the_live_layout_on_fake_kyiv(tmp_path):
    """Version 1 kept only the coupling map and basis gates, so the 8-qubit block landed on other
    qubits than on the live fake backend; version 2 rebuilds the Target and lands on the same ones."""
    path = write_snapshot("fake_kyiv", tmp_path)
    data = json.loads(path.read_text())
    assert data["format_version"] == 2 and data["calibration"]["date"] == data["calibration_date"]
    circuit, _, _ = build_circuit(CircuitSpec(num_qubits=8, reps=2))
    live, snap = noise_source_for_backend("fake_kyiv"), load_snapshot(path)
    for seed in (0, 3):
        on_live, on_snap = IsaProgram(circuit, live, 2, seed), IsaProgram(circuit, snap, 2, seed)
        assert on_snap.physical == on_live.physical
        assert on_snap.isa == on_live.isa
    assert on_snap.isa.estimate_duration(snap.layout_target) == on_live.isa.estimate_duration(live.backend.target)


def test_version_1_snapshot_still_loads_with_the_coupling_map_only(tmp_path):
    path = version_1(write_snapshot("fake_athens", tmp_path), tmp_path)
    source = load_snapshot(path)
    assert source.target is None and source.calibration is None and source.layout_target is None
    circuit, _, _ = build_circuit(SPEC)
    old = generate_preset_pass_manager(2, basis_gates=source.basis_gates, coupling_map=CouplingMap(source.coupling_map),
                                       seed_transpiler=0).run(circuit)
    assert IsaProgram(circuit, source, 2, 0).isa == old
    assert "layout may differ" in noise_snapshots.__doc__  # the docs say what version 1 lacks


def test_a_snapshot_of_an_unknown_version_or_damaged_calibration_is_one_error(tmp_path):
    path = write_snapshot("fake_athens", tmp_path)
    data = json.loads(path.read_text())
    (tmp_path / "v9.json").write_text(json.dumps({**data, "format_version": 9}))
    with pytest.raises(InputError, match="snapshot version 9; this qhybrid reads 1, 2: update"):
        load_snapshot(tmp_path / "v9.json")
    sx = next(e for e in data["calibration"]["instructions"] if e["name"] == "sx")
    sx["properties"][0][0] = [99]  # a qubit fake_athens does not have
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"damaged noise-model snapshot \(ValueError: qargs \[99\] outside the 5"):
        load_snapshot(tmp_path / "bad.json")


# --- the error budget ---------------------------------------------------------------------------
def test_inspect_reports_an_error_budget_from_the_backend_calibration(tmp_path):
    report = inspect_circuit(SPEC, "spec", backend="fake_athens", out=tmp_path)
    stats = json.loads((tmp_path / "spec" / "fake_athens.json").read_text())
    budget = stats["error_budget"]
    backend = fake_backend("fake_athens")
    target, props = backend.target, backend.properties()
    program = IsaProgram(build_circuit(SPEC)[0], noise_source_for_backend("fake_athens"), 2, 0)  # the same ISA
    # fidelity = prod over gates (1 - gate error) x prod over measured qubits (1 - readout error)
    gates = [(i.operation.name, tuple(program.isa.find_bit(q).index for q in i.qubits)) for i in program.isa.data
             if i.operation.name != "barrier"]
    fid_gates = {n: math.prod(1 - target[g][q].error for g, q in gates if len(q) == n) for n in (1, 2)}
    fid_readout = math.prod(1 - target["measure"][(q,)].error for q in program.physical)
    assert budget["estimated_fidelity"] == pytest.approx(fid_gates[1] * fid_gates[2] * fid_readout, rel=1e-12)
    assert budget["fidelity"] == pytest.approx({"two_qubit": fid_gates[2], "one_qubit": fid_gates[1],
                                                "readout": fid_readout}, rel=1e-12)
    shares = budget["infidelity_share"]  # of -log F: they add up to 1
    assert sum(shares.values()) == pytest.approx(1)
    assert shares["readout"] == pytest.approx(math.log(fid_readout) / math.log(budget["estimated_fidelity"]))
    # per used qubit: readout error, P(0|1), P(1|0), T1/T2 from the calibration
    assert [r["physical"] for r in budget["qubits"]] == program.active
    for row in budget["qubits"]:
        q, measured = row["physical"], props.qubit_property(row["physical"])
        assert row["readout_error"] == target["measure"][(q,)].error
        assert (row["prob_meas0_prep1"], row["prob_meas1_prep0"]) == \
            (measured["prob_meas0_prep1"][0], measured["prob_meas1_prep0"][0])
        assert row["t1_us"] == pytest.approx(target.qubit_properties[q].t1 * 1e6)
        assert row["gate_errors"]["sx"] == target["sx"][(q,)].error
    # per used coupler: gate, count and error; the counts add up to the ISA's two-qubit gates
    assert sum(c["count"] for c in budget["couplers"]) == stats["transpiled"]["two_qubit_gates"] > 0
    for c in budget["couplers"]:
        assert c["error"] == target[c["gate"]][tuple(c["qubits"])].error
    assert budget["calibration_date"] == props.last_update_date.isoformat() == stats["calibration"]["date"]
    assert stats["calibration"]["kind"] == "fake backend"
    assert f"estimated fidelity {budget['estimated_fidelity']:.3f}" in report["text"]
    assert "infidelity share" in report["text"] and "per coupler" in report["text"]


def test_inspect_from_a_version_2_snapshot_uses_its_calibration_and_names_it(tmp_path):
    path = write_snapshot("fake_athens", tmp_path / "nm")
    live = inspect_circuit(SPEC, "spec", backend="fake_athens", out=tmp_path / "live")["stats"]
    report = inspect_circuit(SPEC, "spec", noise_model=path, out=tmp_path / "snap")
    snap = report["stats"]
    assert snap["transpiled"]["layout"] == live["transpiled"]["layout"]
    assert snap["transpiled"]["estimated_duration_us"] == live["transpiled"]["estimated_duration_us"] > 0
    assert snap["error_budget"] == live["error_budget"]
    cal = json.loads((tmp_path / "snap" / "spec" / "fake_athens-snapshot.json").read_text())["calibration"]
    assert cal["kind"] == "snapshot" and cal["file"] == str(path) and cal["format_version"] == 2
    assert cal["date"] == json.loads(path.read_text())["calibration_date"]
    assert f"snapshot {path} of fake_athens, calibrated {cal['date']}" in report["text"]


def test_inspect_from_a_version_1_snapshot_says_what_it_lacks(tmp_path):
    path = version_1(write_snapshot("fake_athens", tmp_path), tmp_path)
    report = inspect_circuit(SPEC, "spec", noise_model=path, out=tmp_path / "c")
    assert report["stats"]["error_budget"] is None
    assert "layout may differ" in report["text"] and "error budget: unavailable" in report["text"]


def test_inspect_refuses_a_backend_that_is_not_the_snapshots(tmp_path):
    path = write_snapshot("fake_athens", tmp_path / "nm")
    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.to_json())
    line = one_line_error(run("circuits", "inspect", "--spec", spec, "--backend", "fake_manila", "--noise-model", path,
                              "--out", tmp_path / "c"))
    assert f"--backend fake_manila differs from the backend of snapshot {path} (fake_athens)" in line
    assert "drop --backend" in line
    proc = run("circuits", "inspect", "--spec", spec, "--noise-model", path, "--out", tmp_path / "c")  # no --backend
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("spec on fake_athens (snapshot)") and str(path) in proc.stdout
    assert "give --backend" in one_line_error(run("circuits", "inspect", "--spec", spec, "--out", tmp_path / "c"))


# --- QASM 3 with the trained weights ------------------------------------------------------------
def test_bound_qasm_reproduces_the_trained_block_outside_qhybrid(tmp_path, tiny_models):
    from qhybrid.models.denoiser import LatentDenoiser

    model = tiny_models / "ldm-hybrid"
    proc = run("circuits", "inspect", "--model", model, "--backend", "fake_athens", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / f"{model.parent.name}_{model.name}"
    stats = json.loads((folder / "fake_athens.json").read_text())
    text = (folder / "fake_athens-bound.qasm").read_text()
    assert text.startswith("OPENQASM 3") and "input float[64]" in text and "fake_athens-bound.qasm" in proc.stdout
    circuit = qasm3.loads(text)
    names = stats["bound_qasm"]["inputs"]
    assert sorted(p.name for p in circuit.parameters) == sorted(names)  # only the inputs are left
    block = LatentDenoiser.from_checkpoint(model).quantum_block
    x = torch.as_tensor(np.random.default_rng(0).uniform(-2, 2, (4, block.num_inputs)), dtype=torch.float64)
    expected = block(x).detach().numpy()
    layout = stats["transpiled"]["layout"]  # logical qubit -> physical qubit at the end of the circuit
    observables = [SparsePauliOp(label).apply_layout(layout, circuit.num_qubits) for label in stats["spec"]["observables"]]
    by_name = {p.name: p for p in circuit.parameters}
    for row, values in zip(expected, x.numpy()):
        state = Statevector(circuit.assign_parameters({by_name[n]: v for n, v in zip(names, values)}))
        np.testing.assert_allclose([state.expectation_value(o).real for o in observables], row, atol=1e-6)


# --- qhybrid backends ---------------------------------------------------------------------------
@pytest.mark.slow  # 4 s: builds every fake backend
def test_backends_shows_calibration_summaries_and_caches_them(private_cache, monkeypatch):
    proc = run("backends", "--json", "--qubits", "100")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["backends"]}
    torino, target = rows["fake_torino"], fake_backend("fake_torino").target
    assert (torino["qubits"], torino["two_qubit_gate"], torino["fits"]) == (133, "cz", True)
    assert rows["fake_athens"]["fits"] is False
    assert torino["median_two_qubit_error"] == pytest.approx(np.median([p.error for p in target["cz"].values()]))
    assert torino["median_readout_error"] == pytest.approx(np.median([p.error for p in target["measure"].values()]))
    assert torino["median_t1_us"] == pytest.approx(np.median([q.t1 for q in target.qubit_properties]) * 1e6)
    assert torino["calibration_date"] == fake_backend("fake_torino").properties().last_update_date.isoformat()
    cache = json.loads((private_cache / "backends.json").read_text())
    import qiskit_ibm_runtime

    assert cache["qiskit-ibm-runtime"] == qiskit_ibm_runtime.__version__
    # the second run reads the cache: it builds no backend
    builds = []
    monkeypatch.setattr(backend_cache, "build_summaries", lambda: builds.append(1) or cache["backends"])
    proc = run("backends", "--qubits", "100")
    assert proc.returncode == 0 and builds == []
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("fake_torino"))
    assert line.split()[1:4] == ["133", "cz", f"{torino['median_two_qubit_error'] * 100:.2f}%"]
    assert line.endswith("2025-02-26  yes") and "fits 100q" in proc.stdout.splitlines()[0]
    # a damaged cache, or one of another qiskit-ibm-runtime, is rebuilt silently
    for damaged in ("{nope", json.dumps({**cache, "qiskit-ibm-runtime": "0.0"}),
                    json.dumps({**cache, "backends": [{"name": "x"}]})):
        (private_cache / "backends.json").write_text(damaged)
        proc = run("backends")
        assert proc.returncode == 0 and proc.stderr == "" and "fake_torino" in proc.stdout
        assert json.loads((private_cache / "backends.json").read_text()) == cache
    assert len(builds) == 3


def test_backends_says_which_fit_a_model(monkeypatch, tiny_models):
    rows = [{"name": "fake_one", "qubits": 1, "two_qubit_gate": None, "median_two_qubit_error": None,
             "median_readout_error": 0.02, "median_t1_us": 100.0, "calibration_date": None},
            {"name": "fake_five", "qubits": 5, "two_qubit_gate": "cx", "median_two_qubit_error": 0.01,
             "median_readout_error": 0.02, "median_t1_us": 100.0, "calibration_date": "2021-03-15T10:00:00+00:00"}]
    monkeypatch.setattr(backend_cache, "build_summaries", lambda: rows)
    proc = run("backends", "--model", tiny_models / "ldm-hybrid", "--json")  # a 3-qubit circuit
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["needed_qubits"] == 3 and [r["fits"] for r in info["backends"]] == [False, True]
    assert "no quantum block" in one_line_error(run("backends", "--model", tiny_models / "ldm-classical"))
