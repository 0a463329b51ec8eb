"""Error mitigation through qiskit-ibm-runtime's executor-based Estimator, offline on fake backends:
the settings, what they send to the runtime, what they do to the block's error, and what they cost.

fake_manila's error is dominated by readout (about 3% per qubit), which is what TREX removes and
ZNE (gate folding) does not: the tests rest on that."""

import json
import re

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, run

from qhybrid.quantum import CircuitSpec, QuantumBlock, build_circuit, build_observables
from qhybrid.quantum.mitigation import (
    KINDS,
    Mitigation,
    MitigationError,
    parse_mitigation,
    program_counts,
)
from qhybrid.quantum.primitives.aer import NoisyEstimator, noise_source_for_backend
from qhybrid.quantum.primitives.exact import ExactEstimator
from qhybrid.quantum.primitives.runtime import RuntimeOptions

SPEC = CircuitSpec(num_qubits=3, reps=1)


def block_pub(rows: int = 24, seed: int = 0):
    circuit, _, _ = build_circuit(SPEC)
    values = np.random.default_rng(seed).uniform(-np.pi, np.pi, (rows, circuit.num_parameters))
    return circuit, [[o] for o in build_observables(SPEC)], values


def mean_error(estimator, pub) -> float:
    exact = ExactEstimator().run([pub]).result()[0].data.evs
    return float(np.abs(estimator.run([pub]).result()[0].data.evs - exact).mean())


# --- settings ----------------------------------------------------------------------------------------
def test_the_cli_and_the_module_offer_the_same_mitigations():
    from qhybrid.cli.commands import MITIGATION_SWEEP
    from qhybrid.cli.parser import MITIGATION_KINDS

    assert MITIGATION_KINDS == KINDS and set(MITIGATION_SWEEP) <= set(KINDS)


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "pec"}, "unknown mitigation 'pec'; allowed: none, readout, trex, zne, twirling, trex+zne"),
    ({"kind": "zne", "noise_factors": (1,)}, "at least two distinct noise factors >= 1"),
    ({"kind": "zne", "noise_factors": (0.5, 1)}, "at least two distinct noise factors >= 1"),
    ({"kind": "zne", "extrapolator": ("cubic",)}, "unknown ZNE extrapolator cubic; allowed: exponential"),
    ({"kind": "zne", "noise_factors": (1, 3), "extrapolator": ("polynomial_degree_2",)},
     "needs at least 3 noise factors, got 2"),
])
def test_a_malformed_setting_names_what_is_wrong_and_what_is_allowed(fields, message):
    with pytest.raises(MitigationError, match=re.escape(message)):
        Mitigation(**fields)


def test_settings_travel_as_small_dicts_and_read_qhybrid_01s_boolean_option():
    assert Mitigation.of(True).kind == "readout" and Mitigation.of(False).kind == "none"
    assert Mitigation("trex").to_dict() == {"kind": "trex"}  # no ZNE fields on a TREX setting
    zne = parse_mitigation("zne", "1,2,3", "linear")
    assert Mitigation.of(zne.to_dict()) == zne and zne.key == "zne-1-2-3-linear"
    assert Mitigation("zne").key == "zne" and Mitigation("zne").label == "ZNE (1, 3, 5; exponential, linear)"
    with pytest.raises(MitigationError, match="only apply with --mitigation zne"):
        parse_mitigation("trex", "1,3")


def test_each_kind_switches_on_exactly_its_technique_in_the_runtimes_own_options():
    """Resilience level 0 plus the technique: the runtime's finalised options (its own code) agree."""
    from qiskit_ibm_runtime.executor_estimator.finalize_options import (
        finalize_estimator_options,
    )
    from qiskit_ibm_runtime.options_models.estimator import EstimatorOptions

    def final(kind):
        return finalize_estimator_options(EstimatorOptions(**Mitigation(kind).estimator_options(1000)))

    none, trex, zne, twirl, both = (final(k) for k in ("none", "trex", "zne", "twirling", "trex+zne"))
    assert both.resilience.measure_mitigation and both.resilience.zne_mitigation and not both.twirling.enable_gates
    assert not none.resilience.measure_mitigation and not none.resilience.zne_mitigation
    assert not (none.twirling.enable_gates or none.twirling.enable_measure)
    assert trex.resilience.measure_mitigation and trex.twirling.enable_measure and not trex.resilience.zne_mitigation
    assert zne.resilience.zne_mitigation and list(zne.resilience.zne.noise_factors) == [1, 3, 5]
    assert not zne.resilience.measure_mitigation
    assert twirl.twirling.enable_gates and twirl.twirling.enable_measure and not twirl.resilience.measure_mitigation
    with pytest.raises(MitigationError, match="use 'trex'"):
        Mitigation("readout").estimator_options(1000)


def test_runtime_options_take_a_mitigation_or_a_resilience_level_not_both():
    with pytest.raises(ValueError, match="not both"):
        RuntimeOptions(mitigation="trex", resilience_level=1)
    with pytest.raises(ValueError, match="on IBM Quantum use 'trex'"):
        RuntimeOptions(mitigation="readout")
    with pytest.raises(ValueError, match="unknown runtime primitive 'sampler'"):
        RuntimeOptions(primitive="sampler")
    # offline, the executor path applies every mitigation; only DD needs the device's timing
    assert RuntimeOptions(mitigation="zne", twirling=True).ignored_locally() == []
    assert RuntimeOptions(dd=True).ignored_locally() == ["dynamical_decoupling"]
    assert RuntimeOptions(primitive="estimator", mitigation="trex").ignored_locally() == ["mitigation (trex)"]
    assert RuntimeOptions().describe() == "the service's default mitigation (level 1: TREX)"


# --- behaviour on a fake backend --------------------------------------------------------------------------
@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_trex_removes_most_of_a_readout_dominated_error_and_zne_does_not():
    pub = block_pub()
    source = noise_source_for_backend("fake_manila")
    errors = {kind: mean_error(NoisyEstimator(source, shots=20_000, mitigation=kind, seed=1), pub)
              for kind in ("none", "readout", "trex", "zne")}
    floor = np.sqrt(2 / np.pi) / np.sqrt(20_000)  # at most this much is shot noise
    assert errors["none"] > 4 * floor  # a device error, not sampling
    assert errors["trex"] < 0.5 * errors["none"]  # the runtime's TREX, run by its own code offline
    assert errors["readout"] < 0.5 * errors["none"]  # qhybrid's inversion does the same job
    assert errors["zne"] > 0.7 * errors["none"]  # folding two-qubit gates leaves the readout error in place


def test_the_fake_target_counts_every_circuit_and_shot_a_device_would_run():
    """none: one circuit per binding; ZNE: one per binding and noise factor; TREX: split over
    randomisations plus its calibration circuits, exactly as the runtime's pre-processing plans them."""
    circuit, observables, values = pub = block_pub(rows=8)
    source = noise_source_for_backend("fake_manila")
    counted = {}
    for kind in ("none", "zne", "trex"):
        est = NoisyEstimator(source, shots=1000, mitigation=kind, seed=0)
        est.run([pub]).result()
        counted[kind] = (est.circuit_executions, est.shots_run)
    assert counted["none"] == (8, 8000)
    # readout inversion calibrates once per transpiled circuit (two circuits), not once per call
    readout = NoisyEstimator(source, shots=1000, mitigation="readout", seed=0, calibration_shots=4000)
    for _ in range(3):
        readout.run([pub]).result()
    assert (readout.circuit_executions, readout.shots_run) == (3 * 8 + 2, 3 * 8000 + 2 * 4000)
    assert counted["zne"] == (24, 24_000)
    program = est.program(circuit)
    mapped = [program.map_observable(o[0]) for o in observables]
    compact = (program.compact, [[m] for m in mapped], values[:, [list(circuit.parameters).index(p)
                                                                   for p in program.compact.parameters]])
    planned = program_counts(Mitigation("trex").estimator_options(1000), compact)
    assert counted["trex"] == (planned["circuit_executions"], planned["shots"])
    assert counted["trex"][1] > 8000  # the calibration circuits cost shots too


@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_the_fake_target_and_the_ibm_target_offline_run_the_same_mitigation_code():
    """TREX on fake:fake_manila and on ibm:fake_manila (the executor path, compacted device): the same
    result up to shot noise, both far below the unmitigated error."""
    x = torch.rand(16, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    shots = 50_000
    with torch.no_grad():
        fake = QuantumBlock(SPEC, target="fake:fake_manila", shots=shots, seed=0, mitigation="trex")(x).double().numpy()
        ibm = QuantumBlock(SPEC, target="ibm:fake_manila", shots=shots, seed=0, mitigation="trex")(x).double().numpy()
        raw = QuantumBlock(SPEC, target="fake:fake_manila", shots=shots, seed=0)(x).double().numpy()
        ideal = QuantumBlock(SPEC, seed=0)(x).double().numpy()
    assert np.abs(fake - ibm).mean() < 4 * np.sqrt(2 / shots)  # TREX's rescaling inflates shot noise a little
    assert np.abs(ibm - ideal).mean() < 0.5 * np.abs(raw - ideal).mean()


def test_sample_takes_a_mitigation_on_the_fake_target_and_refuses_readout_on_ibm(tiny_models, tmp_path):
    model = tiny_models / "ldm-hybrid"
    done = run("sample", "--model", model, "--n", "2", "--steps", "2", "--target", "fake:fake_manila",
               "--mitigation", "zne", "--zne-factors", "1,2,3", "--zne-extrapolator", "linear", "--out", tmp_path / "s")
    assert done.returncode == 0, done.stderr
    assert "target fake:fake_manila" in done.stdout
    info = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert info["target_options"]["mitigation"] == {"kind": "zne", "noise_factors": [1.0, 2.0, 3.0],
                                                    "extrapolator": ["linear"]}
    refused = run("sample", "--model", model, "--target", "ibm:fake_manila", "--mitigation", "readout", "--out",
                  tmp_path / "r")
    assert refused.returncode == 2 and "use --mitigation trex" in one_line_error(refused)
    bad = run("sample", "--model", model, "--target", "fake:fake_manila", "--mitigation", "zne", "--zne-factors", "1",
              "--out", tmp_path / "b")
    assert bad.returncode == 2 and "at least two distinct noise factors" in one_line_error(bad)
