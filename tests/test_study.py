"""The ansatz study (qhybrid.quantum.study): a tiny study on a small fake backend writes a complete,
reproducible report with sane numbers; bad configurations fail early with a clear InputError."""

import dataclasses
import json

import pytest

from qhybrid.errors import InputError
from qhybrid.quantum.study import STUDY_FILES, StudyConfig, run_study

ANSATZE_UNDER_TEST = ("real_amplitudes", "strongly_entangling")
BACKEND = "fake_manila"  # 5 qubits: small noise model, quick to load


def tiny(**overrides):
    kw = dict(ansatze=ANSATZE_UNDER_TEST, qubits=(2, 3), reps=1, backends=(BACKEND,), gradient_samples=16,
              entanglement_samples=16, expressibility_pairs=40, noise_inputs=3, shots=256, seed=7)
    return StudyConfig(**{**kw, **overrides})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, run_study(out, tiny(), progress=False)


def without_timing(results):
    return {k: v for k, v in results.items() if k != "timing"}


def test_writes_every_file(study):
    out, _ = study
    for name in STUDY_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in STUDY_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries


def test_json_round_trips_and_has_every_cell(study):
    out, results = study
    saved = json.loads((out / "study.json").read_text())
    assert saved == results
    assert StudyConfig.from_dict(saved["config"]) == tiny()
    cells = {(c["ansatz"], c["num_qubits"]): c for c in saved["cells"]}
    assert set(cells) == {(a, n) for a in ANSATZE_UNDER_TEST for n in (2, 3)}
    for cell in cells.values():
        assert set(cell["backends"]) == {BACKEND}
    assert set(saved["decay"]) == set(ANSATZE_UNDER_TEST)


def test_numbers_are_sane(study):
    _, results = study
    for c in results["cells"]:
        where = (c["ansatz"], c["num_qubits"])
        assert 0.0 <= c["entangling_capability"]["mean"] <= 1.0, where
        assert c["gradient_variance"]["variance"] > 0 and c["gradient_variance"]["stderr"] > 0, where
        assert c["expressibility"]["kl"] >= 0, where
        assert c["num_weights"] > 0 and c["logical_depth"] > 0 and c["logical_two_qubit_gates"] > 0, where
        b = c["backends"][BACKEND]
        assert 0.0 < b["noise_error_mean"] <= b["noise_error_max"] < 1.0, where
        assert b["isa_two_qubit_gates"] >= c["logical_two_qubit_gates"], where
        assert b["isa_depth"] >= c["logical_depth"], where
        assert len(b["layout"]) == c["num_qubits"] and b["shot_noise_floor"] > 0, where
    for decay in results["decay"].values():
        assert decay["factor_per_qubit"] is not None and decay["factor_per_qubit"] > 0
    # the 3-qubit ring of strongly entangling layers needs routing on the linear 5-qubit device
    ring = next(c for c in results["cells"] if c["ansatz"] == "strongly_entangling" and c["num_qubits"] == 3)
    assert ring["backends"][BACKEND]["isa_two_qubit_gates"] > ring["logical_two_qubit_gates"]


def test_markdown_has_table_decay_and_a_computed_recommendation(study):
    out, results = study
    md = (out / "study.md").read_text()
    assert "| ansatz | qubits | weights |" in md
    assert md.count("| `real_amplitudes` | 2 |") >= 1 and "| `strongly_entangling` | 3 |" in md
    assert "per added qubit" in md
    assert "**Rule.**" in md and "1.5×" in md
    rec = results["recommendation"]
    assert rec["ansatz"] in ANSATZE_UNDER_TEST
    assert f"**Result: default to `{rec['ansatz']}`.**" in md
    # the winner follows the stated rule from the numbers
    kept = [r for r in rec["ranking"] if r["candidate"]]
    assert rec["ansatz"] == max(kept, key=lambda r: r["gradient_variance"])["ansatz"]
    for png in ("gradient_variance.png", "entanglement_expressibility.png", "noise.png"):
        assert f"({png})" in md


@pytest.mark.slow  # 2.5 s
def test_same_seed_gives_identical_numbers(study, tmp_path):
    _, first = study
    again = run_study(tmp_path, tiny(), progress=False)
    assert without_timing(again) == without_timing(first)
    other = run_study(tmp_path / "other", tiny(seed=8, ansatze=("real_amplitudes",), qubits=(2,)), progress=False)
    assert other["cells"][0]["gradient_variance"] != first["cells"][0]["gradient_variance"]


@pytest.mark.parametrize("overrides, message", [
    (dict(ansatze=("real_amplitudes", "hardware_efficient")), "allowed: real_amplitudes"),
    (dict(backends=("fake_nowhere",)), "valid names"),
    (dict(qubits=(0, 2)), "between 1 and 20"),
    (dict(qubits=(2, 6)), "fake_manila has 5 qubits"),
    (dict(gradient_samples=0), "gradient_samples"),
    (dict(shots=-1), "shots"),
    (dict(qubits=()), "must not be empty"),
])
def test_bad_input_raises_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        tiny(**overrides)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(InputError, match="unknown field"):
        StudyConfig.from_dict({**tiny().to_dict(), "colour": "blue"})


def test_config_is_frozen_and_changes_through_validated_replace():
    cfg = tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shots = 10
    assert cfg.replace(shots=10).shots == 10 and cfg.shots == 256
    with pytest.raises(InputError, match="StudyConfig.shots"):
        cfg.replace(shots=0)
    assert cfg.replace(qubits=[3, 2, 3]).qubits == (2, 3)  # normalised again
    assert cfg.backend_sizes == {BACKEND: 5}
    saved = cfg.to_dict()  # the study.json form: every field, tuples as lists, no backend sizes
    assert list(saved) == [f.name for f in dataclasses.fields(StudyConfig)]
    assert saved["ansatze"] == list(ANSATZE_UNDER_TEST) and saved["qubits"] == [2, 3]
    assert StudyConfig.from_dict(json.loads(json.dumps(saved))) == cfg


def test_an_output_folder_that_cannot_be_made_names_the_parameter(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="choose another out_dir"):
        run_study(blocker / "study", tiny(), progress=False)


def test_defaults_are_the_paper_study():
    cfg = StudyConfig()
    assert len(cfg.ansatze) == 5 and cfg.qubits == (4, 6, 8, 10) and cfg.backends == ("fake_torino",)
    assert (cfg.reps, cfg.noise_inputs, cfg.shots, cfg.optimization_level) == (3, 16, 1024, 2)


def test_circuits_study_cli(tmp_path):
    from cli_helpers import one_line_error, run

    out = tmp_path / "study"
    proc = run("circuits", "study", "--ansatze", "real_amplitudes,simplified_two_design", "--qubits", "2,3",
               "--reps", "1", "--backends", "fake_manila", "--samples", "16", "--pairs", "40", "--noise-inputs", "3",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "recommended default" in proc.stdout and "results:" in proc.stdout
    assert (out / "study.md").exists() and (out / "gradient_variance.png").exists()
    line = one_line_error(run("circuits", "study", "--ansatze", "qaoa", "--out", str(out)))
    assert "qaoa" in line and "strongly_entangling" in line
