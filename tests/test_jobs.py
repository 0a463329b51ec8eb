"""The ibm: target and job records, offline: qiskit-ibm-runtime's local testing mode on fake_manila
(5 qubits, ~0.3 s per job) runs the same submission code as IBM Quantum."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, run, run_process

from qhybrid.quantum import CircuitSpec, QuantumBlock
from qhybrid.quantum.primitives.aer import fake_backend
from qhybrid.versions import software_versions
from qhybrid.workflows import jobs

BACKEND = "fake_manila"
TOKEN = "qhybrid-test-token-7f3a9c"  # must never reach a file
LEGACY = Path(__file__).parent / "data" / "legacy-0.1"


@pytest.fixture(scope="module")
def models(tiny_models):
    return tiny_models


def submit(models, jobs_dir, **kw):
    kw.setdefault("n", 4)
    kw.setdefault("steps", 4)
    kw.setdefault("seeds", [3])
    return jobs.submit(models / "ldm-hybrid", BACKEND, jobs_dir=jobs_dir, progress=False, log=lambda *_: None, **kw)


def final_latents(record) -> np.ndarray:
    return record.read_array(record.steps[-1]["latents_file"])


def stop_after(event: str, step: int):
    """An ``on_event`` hook that acts like Ctrl-C once step ``step`` (or a later one) reaches ``event``
    ("submitted": its job id is saved; "done": its latents are saved)."""

    def on_event(name, record, k):
        if name == event and k >= step:
            raise KeyboardInterrupt

    return on_event


def failing_job(message: str):
    """A real primitive job whose work raises (status ERROR): a job the service failed."""
    from qiskit.primitives.primitive_job import PrimitiveJob

    def fail():
        raise RuntimeError(message)

    job = PrimitiveJob(fail)
    job._submit()
    return job


def running_job():
    """A real primitive job that runs until the returned event is set: a job the service is
    still running (a local testing-mode job runs at once, and ends in a fraction of a second)."""
    from qiskit.primitives.primitive_job import PrimitiveJob

    release = threading.Event()
    job = PrimitiveJob(release.wait)
    job._submit()
    while not job._future.running():  # (asked before its thread starts, qiskit would say ERROR)
        time.sleep(0.001)
    return job, release


def kill_cli_submit_after_step_1(models, jobs_dir, env, *extra) -> Path:
    """Start 'qhybrid jobs submit' (seed 3, 4 steps) in a process, SIGKILL it once step 1 is done,
    and return its record's path (the record still says "running": the process could not say more)."""
    from cli_helpers import QHYBRID

    args = ["jobs", "submit", "--model", str(models / "ldm-hybrid"), "--backend", BACKEND, "--n", "4",
            "--steps", "4", "--seed", "3", "--jobs-dir", str(jobs_dir), *extra]
    proc = subprocess.Popen([QHYBRID, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    path = None
    while time.time() < deadline and proc.poll() is None:  # kill once step 1 is done
        path = next(Path(jobs_dir).glob("*.json"), None)
        if path is not None:
            try:
                if jobs.read_record(path)["steps"][1]["status"] == "done":
                    break
            except jobs.JobRecordError:
                pytest.fail("a record was unreadable while the run wrote it")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path is not None, "the run wrote no record"
    partial = jobs.read_record(path)
    assert partial["status"] == "running" and partial["steps"][1]["status"] == "done", "killed too late"
    return path


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    """An uninterrupted run (seed 3, 4 steps) to compare interrupted ones with."""
    return submit(models, tmp_path_factory.mktemp("ref"))[0]


@pytest.mark.filterwarnings("ignore:.*has no QubitProperties")
def test_runtime_estimator_matches_the_ideal_target_on_a_noiseless_backend():
    """The plumbing (one merged PUB, ISA circuit, parameter order, apply_layout) checked exactly:
    a noiseless 5-qubit backend with a ring layout in local testing mode, 200k shots."""
    from qiskit.providers.fake_provider import GenericBackendV2

    from qhybrid.quantum.primitives.runtime import RuntimeEstimator, RuntimeOptions

    spec = CircuitSpec(num_qubits=4, reps=2, observables=("Z0", "Z1", "Z2 Z3", "Z3"))
    block = QuantumBlock(spec, seed=2).double()
    x = torch.tensor([[0.3, -1.2, 2.0, 0.7], [1.0, 0.5, -0.4, -2.2]], dtype=torch.float64)
    ideal = block(x)
    backend = GenericBackendV2(num_qubits=5, coupling_map=[[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]],
                               noise_info=False, seed=0)
    estimator = RuntimeEstimator("generic", RuntimeOptions(shots=200_000), backend=backend)
    values = np.concatenate([x.numpy(), np.tile(block.weight.detach().numpy(), (2, 1))], axis=1)
    result = estimator.run([(block.pub_circuit, o, values) for o in block.observables]).result()
    runtime = np.stack([r.data.evs for r in result], axis=1)
    assert len(estimator.jobs) == 1  # four PUBs from the QNN, one job
    assert np.abs(runtime - ideal.detach().numpy()).max() < 0.02  # shot noise ~0.002


def test_ibm_target_on_a_fake_backend_runs_one_job_per_call():
    spec = CircuitSpec(num_qubits=3, reps=1)
    block = QuantumBlock(spec, seed=1).double()
    x = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.5, -0.4], [-2.5, 0.1, 0.9]], dtype=torch.float64)
    ideal = block(x)
    block.to_target("ibm:fake_manila", shots=4096)
    runtime = block(x)
    assert len(block.qnn.estimator.jobs) == 1  # all rows and observables in one job
    assert runtime.shape == ideal.shape and runtime.dtype == torch.float64
    assert (runtime - ideal).abs().max() < 0.35  # fake_manila's noise, but the same function
    assert str(block.target) == "ibm:fake_manila"


def test_submit_end_to_end_writes_a_complete_record_and_images(models, reference):
    record = reference
    data = jobs.read_record(record.path)
    assert data["status"] == "completed" and record.next_step() is None
    ids = [s["job_id"] for s in data["steps"]]
    assert len(set(ids)) == 4 and all(ids) and not any("attempts" in s for s in data["steps"])
    assert [s["timestep"] for s in data["steps"]] == sorted({s["timestep"] for s in data["steps"]}, reverse=True)
    for s in data["steps"]:
        # one PUB per step holds every chain x patch (4 chains x 2x2 patches of the 4x4 bottleneck)
        assert record.read_array(s["result_file"]).shape == (3, 16)  # (observables, rows)
        assert record.read_array(s["values_file"]).shape[0] == s["bindings"] == 16  # the parameter rows the job ran
        assert record.read_array(s["latents_file"]).shape == (4, 4, 8, 8)
        assert s["shots"] == 1024 and s["submitted_at"] <= s["finished_at"]
    from qhybrid.models.checkpoint import read_header

    assert data["model"]["sha256"] == read_header(models / "ldm-hybrid")["weights_sha256"]
    # the ISA circuit: the backend's gates on its coupled pairs, observables on the chosen qubits
    from qiskit import qpy

    with open(record.folder / "circuit.qpy", "rb") as fh:
        isa = qpy.load(fh)[0]
    backend = fake_backend(BACKEND)
    edges = set(backend.coupling_map.get_edges())
    for ins in isa.data:
        assert ins.operation.name in backend.operation_names
        if ins.operation.num_qubits == 2:
            assert tuple(isa.find_bit(q).index for q in ins.qubits) in edges
    physical = data["circuit"]["physical_qubits"]
    for k, obs in enumerate(data["circuit"]["observables"]):
        (label, coeff), = obs
        assert coeff == 1.0 and label[::-1].index("Z") == physical[k]
    assert (record.folder / "circuit.qasm3").read_text().startswith("OPENQASM 3")
    images = sorted((record.folder / "samples").glob("sample_*.png"))
    assert len(images) == 4 and (record.folder / "samples" / "grid.png").exists()
    assert data["images"]["count"] == 4
    cost = next(line for line in jobs.status_lines(record) if line.startswith("cost"))
    assert "4 executions (one PUB per step) of 16 bindings (4 chains × 4 circuit evaluations each)" in cost
    # the service's default (level 1: TREX) adds its calibration circuits to the 1024 x 16 bindings per job
    program_shots = record.steps[0]["program_shots"]
    assert program_shots > 1024 * 16 and f"{program_shots * 4 / 4:,.0f} shots per image" in cost and "s per step" in cost
    assert data["runtime"] == {"program": "executor", "mitigation": "the service's default mitigation (level 1: TREX)"}


def test_on_event_reports_each_job_id_and_each_step_once_they_are_saved(models, tmp_path):
    seen = []

    def on_event(event, record, k):
        saved = jobs.read_record(record.path)["steps"][k]
        seen.append((event, k, saved["status"], bool(saved["job_id"])))

    submit(models, tmp_path, steps=2, on_event=on_event)
    assert seen == [("submitted", 0, "submitted", True), ("done", 0, "done", True),
                    ("submitted", 1, "submitted", True), ("done", 1, "done", True)]


def test_interrupt_after_a_step_then_resume_equals_the_uninterrupted_run(models, reference, tmp_path):
    before = len(jobs.LIVE_JOBS)
    with pytest.raises(jobs.Interrupted, match="the records are saved"):
        submit(models, tmp_path, on_event=stop_after("done", 1))
    (path,) = tmp_path.glob("*.json")
    run_id = path.stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert [s["status"] for s in record.steps] == ["done", "done", "pending", "pending"]
    assert record.data["status"] == "stopped"
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.data["status"] == "completed"
    assert np.array_equal(final_latents(resumed), final_latents(reference))
    assert len(jobs.LIVE_JOBS) - before == 4  # four steps, four jobs: none submitted twice
    assert len({s["job_id"] for s in resumed.steps}) == 4 and not any("attempts" in s for s in resumed.steps)


def test_interrupt_while_a_job_runs_then_resume_reuses_that_job(models, reference, tmp_path):
    before = len(jobs.LIVE_JOBS)
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 2))
    run_id = next(tmp_path.glob("*.json")).stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert [s["status"] for s in record.steps] == ["done", "done", "submitted", "pending"]
    assert record.data["status"] == "waiting"
    job_id = record.steps[2]["job_id"]
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.steps[2]["job_id"] == job_id and "attempts" not in resumed.steps[2]
    assert len(jobs.LIVE_JOBS) - before == 4
    assert np.array_equal(final_latents(resumed), final_latents(reference))


def test_a_local_job_lost_with_its_process_is_resubmitted_and_recorded(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 1))
    run_id = next(tmp_path.glob("*.json")).stem
    lost = jobs.JobRecord.load(tmp_path, run_id).steps[1]["job_id"]
    jobs.LIVE_JOBS.pop(lost)  # what a new process sees: local jobs die with their process
    notes = []
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=notes.append)
    assert resumed.steps[1]["attempts"] == [{"job_id": lost, "status": "LOST", "note": resumed.steps[1]["attempts"][0]["note"]}]
    assert "ends with the process" in resumed.steps[1]["attempts"][0]["note"]
    assert any("ended with its process" in n for n in notes)
    assert np.array_equal(final_latents(resumed), final_latents(reference))  # same seed per step


def test_fetch_collects_finished_jobs_submits_nothing_and_decodes_at_the_end(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 1))
    run_id = next(tmp_path.glob("*.json")).stem
    live = len(jobs.LIVE_JOBS)
    fetched = jobs.fetch(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert len(jobs.LIVE_JOBS) == live  # fetch submitted nothing
    assert [s["status"] for s in fetched.steps] == ["done", "done", "pending", "pending"]
    assert fetched.data["status"] == "stopped" and not fetched.data["images"]
    with pytest.raises(jobs.Interrupted):  # submit the last step, then stop
        jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None, on_event=stop_after("submitted", 3))
    fetched = jobs.fetch(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert fetched.data["status"] == "completed" and fetched.data["images"]["count"] == 4
    assert np.array_equal(final_latents(fetched), final_latents(reference))


def test_fetching_a_job_whose_post_processor_the_runtime_lacks_names_the_version_and_keeps_the_record(
        models, tmp_path, monkeypatch):
    """Fetching an executor job re-runs the client-side post-processor it was prepared for. A runtime
    without that version (here: the installed one's table emptied) gets one line naming it and the
    release that submitted the job; the record is left as it was."""
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 1))
    (path,) = tmp_path.glob("*.json")
    record = jobs.JobRecord.load(tmp_path, path.stem)
    assert record.steps[1]["post_processor"] == {"version": "v0.1"} and record.steps[1]["status"] == "submitted"
    try:  # qiskit-ibm-runtime 0.51: a table per decoder class
        from qiskit_ibm_runtime.decoders.executor_estimator.decoder import (
            ClientSideEstimatorDecoder,
        )

        monkeypatch.setattr(ClientSideEstimatorDecoder, "SUPPORTED_POST_PROCESSORS", {})
    except ImportError:  # 0.50: one table by semantic role
        from qiskit_ibm_runtime.decoders.quantum_program import decoder

        monkeypatch.setitem(decoder.SUPPORTED_POST_PROCESSORS, "estimator_v2", {})
    with pytest.raises(jobs.JobRecordError) as caught:
        jobs.fetch(path.stem, tmp_path, progress=False, log=lambda *_: None)
    line = str(caught.value)
    runtime = software_versions()["qiskit-ibm-runtime"]
    assert "\n" not in line and f"step 1 of {path.stem}) needs the executor post-processor v0.1" in line
    assert f"install qiskit-ibm-runtime=={runtime} (the version that submitted it)" in line
    assert jobs.JobRecord.load(tmp_path, path.stem).steps[1]["status"] == "submitted"


@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_several_seeds_and_levels_make_independent_runs_in_one_batch(models, reference, tmp_path):
    records = submit(models, tmp_path, steps=2, seeds=[3, 4], resilience_levels=[0, 1], twirling=True)
    assert len(records) == 4
    assert {(r.data["sampling"]["seed"], r.data["options"]["resilience_level"]) for r in records} == {
        (3, 0), (3, 1), (4, 0), (4, 1)}
    for r in records:
        assert r.data["mode"]["requested"] == "batch" and r.data["mode"]["used"] == "batch"
        assert r.data["ignored_locally"] == []  # offline, the executor path applies levels and twirling
        assert r.data["runtime"]["program"] == "executor"
        assert r.data["status"] == "completed"
    latents = {r.data["sampling"]["seed"]: r.read_array("initial_latents.npy") for r in records}
    assert not np.array_equal(latents[3], latents[4])
    assert np.array_equal(latents[3], reference.read_array("initial_latents.npy"))


@pytest.mark.slow  # real processes, killed or offline
def test_a_record_stays_valid_json_when_the_writer_is_killed(models, reference, tmp_path):
    target = tmp_path / "record.json"
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from qhybrid.workflows.jobs import JobRecord\n"
        f"data = json.loads(Path({str(reference.path)!r}).read_text())\n"
        f"record = JobRecord(Path({str(target)!r}), data)\n"
        "record.save(); print('ready', flush=True)\n"
        "k = 0\n"
        "while True:\n"
        "    k += 1\n"
        "    record.data['steps'][k % 4]['note'] = 'x' * (k % 5000)\n"
        "    record.save()\n"
    )
    for delay in (0.05, 0.2, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        jobs.read_record(target)  # parses and validates
    # a temporary file left by a kill mid-write is never mistaken for a record
    assert [p.name for p, _, _ in jobs.list_records(tmp_path)] == ["record.json"]


@pytest.mark.slow  # real processes, killed or offline
def test_cli_run_killed_mid_way_then_resumed_in_a_new_process(models, reference, tmp_path):
    env = {**os.environ, "QISKIT_IBM_TOKEN": TOKEN}
    run_id = kill_cli_submit_after_step_1(models, tmp_path, env).stem
    status = run_process("jobs", "status", run_id, "--jobs-dir", str(tmp_path), env=env)
    assert status.returncode == 0 and run_id in status.stdout and "steps done" in status.stdout
    resumed = run_process("jobs", "resume", run_id, "--jobs-dir", str(tmp_path), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "completed, 4/4 steps" in resumed.stdout and "results:" in resumed.stdout
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert np.array_equal(final_latents(record), final_latents(reference))
    attempts = [a for s in record.steps for a in s.get("attempts", [])]
    assert all(a["status"] in ("LOST", "SUBMITTED", "RUNNING", "QUEUED", "DONE") for a in attempts)  # only local jobs lost with the process
    listing = run_process("jobs", "list", "--jobs-dir", str(tmp_path), env=env)
    assert run_id in listing.stdout and "completed" in listing.stdout
    # the token in the environment reached no file the run wrote, and no output
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
    assert TOKEN not in resumed.stdout + resumed.stderr + status.stdout


@pytest.mark.slow  # real processes, killed or offline
@pytest.mark.parametrize("mitigation", ["trex", "zne"])
def test_a_mitigated_executor_run_killed_then_resumed_and_fetched_equals_the_uninterrupted_run(
        models, tmp_path, mitigation):
    """jobs submit --mitigation X -> SIGKILL after step 1 -> jobs resume -> jobs fetch, offline on
    the executor path: the record is complete (program, post-processor, mitigation, the circuits and
    shots each job's program sent) and the images are the uninterrupted run's."""
    uninterrupted = submit(models, tmp_path / "ref", mitigation=mitigation)[0]
    env = dict(os.environ)
    run_id = kill_cli_submit_after_step_1(models, tmp_path / "jobs", env, "--mitigation", mitigation).stem
    resumed = run_process("jobs", "resume", run_id, "--jobs-dir", str(tmp_path / "jobs"), env=env)
    assert resumed.returncode == 0, resumed.stderr
    fetched = run_process("jobs", "fetch", run_id, "--jobs-dir", str(tmp_path / "jobs"), env=env)
    assert fetched.returncode == 0 and "completed, 4/4 steps" in fetched.stdout, fetched.stderr
    record = jobs.JobRecord.load(tmp_path / "jobs", run_id)
    assert record.data["status"] == "completed" and record.data["images"]["count"] == 4
    assert np.array_equal(final_latents(record), final_latents(uninterrupted))
    assert record.data["options"]["mitigation"]["kind"] == mitigation and record.program == "executor"
    for step in record.steps:
        assert step["status"] == "done" and step["program"] == "executor"
        assert step["post_processor"] == {"version": "v0.1"}
        raw = step["bindings"] * step["shots"]
        # ZNE runs every binding at noise factors 1, 3, 5; TREX adds its calibration circuits
        assert step["program_shots"] == (3 * raw if mitigation == "zne" else step["program_shots"]) > raw
    status = run_process("jobs", "status", run_id, "--jobs-dir", str(tmp_path / "jobs"), env=env).stdout
    label = "ZNE (1, 3, 5; exponential, linear)" if mitigation == "zne" else "TREX"
    assert f"executor-based Estimator (program 'executor'); mitigation: {label}; post-processor v0.1" in status


@pytest.mark.slow  # real processes, killed or offline
def test_no_account_and_no_network_end_with_one_line_and_write_nothing(models, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    args = ["jobs", "submit", "--model", str(models / "ldm-hybrid"), "--backend", "ibm_torino",
            "--jobs-dir", str(tmp_path / "jobs")]
    line = one_line_error(run_process(*args, env={**clean, "HOME": str(home)}), code=1)
    assert "no IBM Quantum account is configured" in line and "save_account" in line and "fake_" in line
    # a dry run on an ibm_ backend needs the backend's durations from the service: the same line
    line = one_line_error(run_process(*args, "--dry-run", env={**clean, "HOME": str(home)}), code=1)
    assert "no IBM Quantum account is configured" in line
    # an account in the environment, but no way to reach IBM Quantum from here
    env = {**clean, "HOME": str(home), "QISKIT_IBM_TOKEN": TOKEN,
           "QISKIT_IBM_INSTANCE": "crn:v1:bluemix:public:quantum-computing:us-east:a/0123abcd:4567ef::"}
    proc = run_process(*args, env=env)
    line = one_line_error(proc, code=1)
    assert "could not connect to IBM Quantum" in line and TOKEN not in proc.stderr + proc.stdout
    assert not (tmp_path / "jobs").exists()


def test_fetch_of_an_ibm_run_without_a_connection_leaves_the_record_intact(models, reference, tmp_path):
    data = json.loads(reference.path.read_text())
    data["run_id"] = "ibm-run"
    data["backend"] = {"name": "ibm_torino", "local_testing_mode": False}
    data["status"] = "waiting"
    data["steps"][3].update({"status": "submitted", "job_id": "d1abc2def3ghi4jkl5mn", "job_status": "QUEUED"})
    jobs.seal(data)  # as submit seals a run on ibm_torino (else: refused as edited after submission)
    path = tmp_path / "ibm-run.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    line = one_line_error(run_process("jobs", "fetch", "ibm-run", "--jobs-dir", str(tmp_path), env={**clean, "HOME": str(home)}),
                          code=1)
    assert "no IBM Quantum account" in line and "record is unchanged" in line and "jobs fetch ibm-run" in line
    assert path.read_bytes() == before


def test_bad_input_gives_one_line_errors(models, reference, tmp_path):
    base = ["jobs", "submit", "--model", str(models / "ldm-hybrid"), "--jobs-dir", str(tmp_path)]
    line = one_line_error(run(*base, "--backend", "fake_nowhere"))
    assert "unknown fake backend 'fake_nowhere'" in line and "fake_manila" in line
    line = one_line_error(run(*base, "--backend", "fake_armonk"))
    assert "circuit has 3 qubits but backend fake_armonk has only 1" in line
    assert "--n must be a positive integer, got 0" in one_line_error(run(*base, "--backend", BACKEND, "--n", "0"))
    assert "--steps must be a positive integer, got -2" in one_line_error(
        run(*base, "--backend", BACKEND, "--steps", "-2"))
    assert "--steps must be at most 1000" in one_line_error(run(*base, "--backend", BACKEND, "--steps", "5000"))
    assert "is not one of 0, 1, 2" in one_line_error(run(*base, "--backend", BACKEND, "--resilience-level", "3"))
    line = one_line_error(run("jobs", "submit", "--model", str(models / "ldm-classical"), "--backend", BACKEND,
                              "--jobs-dir", str(tmp_path)))
    assert "no quantum block" in line and "qhybrid sample" in line
    assert not list(tmp_path.glob("*.json"))  # nothing was written by the failed submissions
    line = one_line_error(run("jobs", "status", "no-such-run", "--jobs-dir", str(reference.path.parent)))
    assert "no job record" in line and reference.run_id in line
    damaged = tmp_path / "broken.json"
    damaged.write_text(reference.path.read_text()[:300])
    assert "is not valid JSON" in one_line_error(run("jobs", "resume", "broken", "--jobs-dir", str(tmp_path)), code=1)
    damaged.write_text(json.dumps({"format": "qhybrid-job-record", "format_version": 1}))
    assert "not a valid qhybrid job record (no 'run_id')" in one_line_error(
        run("jobs", "fetch", "broken", "--jobs-dir", str(tmp_path)), code=1)
    listing = run("jobs", "list", "--jobs-dir", str(tmp_path))
    assert listing.returncode == 0 and "DAMAGED" in listing.stdout


def test_sample_with_an_ibm_target_goes_through_a_job_record(models, tmp_path):
    out = tmp_path / "samples"
    proc = run("sample", "--model", str(models / "ldm-hybrid"), "--target", f"ibm:{BACKEND}", "--n", "2",
               "--steps", "2", "--out", str(out), "--jobs-dir", str(tmp_path / "jobs"))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("sample_*.png"))) == 2 and "as job run" in proc.stdout
    (path,) = (tmp_path / "jobs").glob("*.json")
    assert jobs.read_record(path)["status"] == "completed"


def test_a_failed_job_marks_its_step_and_resume_submits_it_again(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 2))
    run_id = next(tmp_path.glob("*.json")).stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    failed_id = record.steps[2]["job_id"]
    jobs.LIVE_JOBS[failed_id] = failing_job("the backend went into maintenance")
    with pytest.raises(jobs.RuntimeTargetError, match=r"step 2 of .* ended ERROR.*jobs resume"):
        jobs.fetch(run_id, tmp_path, progress=False, log=lambda *_: None)
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert record.steps[2]["status"] == "failed" and record.data["status"] == "failed"
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.steps[2]["attempts"][0]["job_id"] == failed_id and resumed.steps[2]["job_id"] != failed_id
    assert np.array_equal(final_latents(resumed), final_latents(reference))


def test_a_crash_while_submitting_is_recovered_without_losing_the_step(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("done", 0))
    run_id = next(tmp_path.glob("*.json")).stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    # what a kill between "submitting" being saved and the job id being saved leaves behind
    record.steps[1].update({"status": "submitting", "tag": jobs.job_tag(run_id, 1)})
    record.save()
    jobs.read_record(record.path)
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert [s["status"] for s in resumed.steps] == ["done"] * 4
    assert resumed.steps[1]["tag"] == jobs.job_tag(run_id, 1)
    assert np.array_equal(final_latents(resumed), final_latents(reference))


def test_one_process_per_run(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("done", 0))
    run_id = next(tmp_path.glob("*.json")).stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    holder = jobs.JobRunner([record], progress=False, log=lambda *_: None)
    holder._lock(record)  # another process working on it
    try:
        line = one_line_error(run("jobs", "resume", run_id, "--jobs-dir", str(tmp_path)), code=1)
        assert "being worked on by another qhybrid process" in line
    finally:
        holder._unlock()
    assert jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None).data["status"] == "completed"


@pytest.mark.parametrize("damage, problem", [
    (lambda d: d.update(sampling=[]), "'sampling' is not a dict"),
    (lambda d: d.pop("status"), "no 'status'"),
    (lambda d: d["steps"][0].pop("latents_file"), "step 0 is 'done' without"),
    (lambda d: d["steps"].pop(), "does not match sampling.steps"),
    (lambda d: d["options"].update(shots=-5), "shots must be a positive integer"),
])
def test_damaged_records_are_named_not_crashed_on(reference, tmp_path, damage, problem):
    data = json.loads(reference.path.read_text())
    damage(data)
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(jobs.JobRecordError, match=problem):
        jobs.read_record(path)
    assert jobs.list_records(tmp_path)[0][1] is None  # listed as damaged, no exception


@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_when_one_of_two_runs_fails_the_other_completes(models, reference, tmp_path):
    failed = {}

    def fail_step_1_of_seed_4(event, record, k):
        if event == "submitted" and k == 1 and record.data["sampling"]["seed"] == 4:
            failed[record.run_id] = record.steps[1]["job_id"]
            jobs.LIVE_JOBS[failed[record.run_id]] = failing_job("the backend went into maintenance")

    with pytest.raises(jobs.RuntimeTargetError, match=r"1 of 2 runs stopped: .*step 1 .*ended ERROR.*the others went on"):
        submit(models, tmp_path, seeds=[3, 4], on_event=fail_step_1_of_seed_4)
    (bad_id,) = failed
    records = {path.stem: jobs.JobRecord.load(tmp_path, path.stem) for path in tmp_path.glob("*.json")}
    bad = records.pop(bad_id)
    (good,) = records.values()
    assert good.data["status"] == "completed" and good.data["images"]["count"] == 4
    assert np.array_equal(final_latents(good), final_latents(reference))  # seed 3, as the reference
    assert [s["status"] for s in bad.steps] == ["done", "failed", "pending", "pending"]
    assert bad.data["status"] == "failed" and bad.steps[1]["job_status"] == "ERROR"
    resumed = jobs.resume(bad_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.data["status"] == "completed"
    assert resumed.steps[1]["attempts"][0]["job_id"] == failed[bad_id]


def test_a_resumed_step_whose_inputs_differ_from_what_its_job_ran_is_refused(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 1))
    run_id = next(tmp_path.glob("*.json")).stem
    record = jobs.JobRecord.load(tmp_path, run_id)
    rows = record.read_array(record.steps[1]["values_file"])
    record.write_array(record.steps[1]["values_file"], rows + 1e-9)  # as if another model had computed them
    with pytest.raises(jobs.JobRecordError, match=r"step 1 of run .*inputs computed now differ from .*values"):
        jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert [s["status"] for s in record.steps] == ["done", "submitted", "pending", "pending"]


def test_records_store_their_circuit_in_a_qpy_version_every_supported_qiskit_reads(models, reference):
    """qiskit 2.4 (the oldest supported) reads QPY up to version 17; a newer qiskit writes 18 by default."""
    data = (reference.folder / "circuit.qpy").read_bytes()
    assert data[:6] == b"QISKIT" and data[6] == jobs.RECORD_QPY_VERSION == 17


def test_a_record_written_by_qhybrid_0_1_resumes_to_the_old_uninterrupted_result(tmp_path):
    """tests/data/legacy-0.1: a format-1 record (fake_manila, 2 chains, 3 steps, seed 0) stopped after
    step 0 by the old code, which raised through the denoiser and saved no parameter rows."""
    from qiskit import qpy

    if qpy.QPY_VERSION < 18:  # its circuit.qpy was written by qiskit 2.6 (QPY 18): a clear refusal instead
        with pytest.raises(jobs.JobRecordError) as caught:
            for name in ("jobs", "ldm-hybrid", "vae"):
                shutil.copytree(LEGACY / name, tmp_path / name)
            (path,) = (tmp_path / "jobs").glob("*.json")
            data = json.loads(path.read_text())
            data["model"]["path"] = str(tmp_path / "ldm-hybrid")
            path.write_text(json.dumps(data))
            jobs.resume(path.stem, tmp_path / "jobs", progress=False, log=lambda *_: None)
        line = str(caught.value)
        assert "the file is version 18" in line and "install the qiskit recorded" in line
        return
    for name in ("jobs", "ldm-hybrid", "vae"):
        shutil.copytree(LEGACY / name, tmp_path / name)
    (path,) = (tmp_path / "jobs").glob("*.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and "values_file" not in data["steps"][0]
    data["model"]["path"] = str(tmp_path / "ldm-hybrid")
    path.write_text(json.dumps(data))
    old_job = data["steps"][0]["job_id"]
    # fetch first (submits nothing, notes this process's provenance), then resume: the old record is
    # sealed as found on first use, not mistaken for a sealed record whose seal was removed
    fetched = jobs.fetch(path.stem, tmp_path / "jobs", progress=False, log=lambda *_: None)
    assert fetched.completed_steps() == 1 and fetched.data["sealed_late"] and fetched.data["provenance"]
    resumed = jobs.resume(path.stem, tmp_path / "jobs", progress=False, log=lambda *_: None)
    assert resumed.data["status"] == "completed" and resumed.data["images"]["count"] == 2
    assert resumed.steps[0]["job_id"] == old_job  # the finished step was not run again
    # a record from before the executor path goes on on the legacy EstimatorV2 it started on
    assert resumed.program == "estimator" and [s.get("program") for s in resumed.steps] == [None, "estimator", "estimator"]
    expected = np.load(LEGACY / "expected_final_latents_fake_manila_n2_steps3_seed0.npy")
    # written by the uninterrupted 0.1 run on an Intel Xeon: bit-identical there; another CPU's kernels
    # round the classical layers' last bits differently (seen: up to 4.8e-7, 1.2e-7 relative, on an AMD EPYC)
    np.testing.assert_allclose(final_latents(resumed), expected, rtol=1e-5, atol=1e-6)


# --- issue 19: what a record fixes, keeps and shows ------------------------------------------------
def test_resume_and_fetch_refuse_a_record_whose_shots_were_edited_after_submission(models, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("done", 1))
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert data["fixed"]["options"]["shots"] == 1024 and len(data["fixed_sha256"]) == 64
    data["options"]["shots"] = 4096  # steps 0 and 1 ran with 1024 shots
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    for call in (jobs.resume, jobs.fetch):
        with pytest.raises(jobs.JobRecordError) as caught:
            call(path.stem, tmp_path, progress=False, log=lambda *_: None)
        line = str(caught.value)
        assert "\n" not in line and f"job record {path} was edited after submission (options.shots)" in line
        assert "its steps ran with the recorded values" in line and "'qhybrid jobs submit'" in line
    assert path.read_bytes() == before  # refused before anything was written
    line = one_line_error(run("jobs", "resume", path.stem, "--jobs-dir", tmp_path), code=1)
    assert "edited after submission (options.shots)" in line
    # removing the seal as well does not pass the record off as one written before records were sealed
    del data["fixed_sha256"]
    path.write_text(json.dumps(data))
    with pytest.raises(jobs.JobRecordError, match="was edited after submission"):
        jobs.resume(path.stem, tmp_path, progress=False, log=lambda *_: None)


def test_a_record_keeps_the_software_versions_and_backend_calibration_that_ran_it(models, tmp_path):
    from importlib import metadata

    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("done", 1))
    (path,) = tmp_path.glob("*.json")
    (entry,) = json.loads(path.read_text())["provenance"]  # written at submission
    assert entry["versions"]["qiskit"] == metadata.version("qiskit")
    assert entry["versions"]["qiskit-aer"] == metadata.version("qiskit-aer")
    assert entry["versions"]["qiskit-ibm-runtime"] == metadata.version("qiskit-ibm-runtime")
    assert set(entry["versions"]) == {"qhybrid", "qiskit", "qiskit-aer", "qiskit-ibm-runtime",
                                      "qiskit-machine-learning", "torch", "python"}
    calibrated = fake_backend(BACKEND).properties().last_update_date.isoformat()
    assert entry["calibration_date"] == calibrated
    # a run resumed by another installation: the versions of both are kept, in order
    data = json.loads(path.read_text())
    data["provenance"][0]["versions"]["qiskit"] = "1.0.0"
    path.write_text(json.dumps(data))
    record = jobs.resume(path.stem, tmp_path, progress=False, log=lambda *_: None)
    first, second = record.data["provenance"]
    assert first["versions"]["qiskit"] == "1.0.0" and second["versions"]["qiskit"] == metadata.version("qiskit")
    assert all(s["metadata"] for s in record.steps)  # the jobs' own metadata is still saved per step
    lines = jobs.status_lines(record)
    assert any(ln.startswith("software   qhybrid ") and "qiskit 1.0.0" in ln and f"calibrated {calibrated}" in ln
               for ln in lines)
    assert any(f"qiskit {metadata.version('qiskit')}," in ln and "(from " in ln for ln in lines)


@pytest.mark.slow  # a real process, killed
def test_list_and_status_show_a_killed_submit_as_stopped_without_rewriting_its_record(models, tmp_path):
    path = kill_cli_submit_after_step_1(models, tmp_path, {**os.environ, "QISKIT_IBM_TOKEN": TOKEN})
    run_id = path.stem
    before = path.read_bytes()
    listing = run("jobs", "list", "--jobs-dir", tmp_path)
    (line,) = [ln for ln in listing.stdout.splitlines() if ln.startswith(run_id)]
    assert " stopped " in line and "running" not in line
    assert f"(its process ended; 'qhybrid jobs resume {run_id}' continues)" in line
    status = run("jobs", "status", run_id, "--jobs-dir", tmp_path)
    assert f"{run_id}  [stopped] (its process ended" in status.stdout
    assert path.read_bytes() == before and json.loads(before)["status"] == "running"  # listing writes nothing
    # while a process holds the run's lock, the recorded "running" is believed
    handle = jobs.hold_lock(jobs.JobRecord.load(tmp_path, run_id))
    try:
        (line,) = [ln for ln in run("jobs", "list", "--jobs-dir", tmp_path).stdout.splitlines() if ln.startswith(run_id)]
        assert " running " in line and "process ended" not in line
    finally:
        handle.close()


def test_cancel_marks_a_running_job_cancelled_and_resume_submits_its_step_again(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 2))
    run_id = next(tmp_path.glob("*.json")).stem
    job_id = jobs.JobRecord.load(tmp_path, run_id).steps[2]["job_id"]
    job, release = running_job()
    jobs.LIVE_JOBS[job_id] = job  # step 2's job is still running
    try:
        proc = run("jobs", "cancel", run_id, "--jobs-dir", tmp_path)
    finally:
        release.set()
    assert proc.returncode == 0, proc.stderr
    assert f"job {job_id} cancelled" in proc.stdout and f"'qhybrid jobs resume {run_id}' continues" in proc.stdout
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert record.data["status"] == "cancelled"
    assert record.steps[2]["status"] == "failed" and record.steps[2]["job_status"] == "CANCELLED"
    assert "its result is not used" in record.steps[2]["note"]  # the local simulator could not stop it
    listing = run("jobs", "list", "--jobs-dir", tmp_path).stdout
    assert any(ln.startswith(run_id) and " cancelled " in ln for ln in listing.splitlines())
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.data["status"] == "completed"
    assert resumed.steps[2]["attempts"][0]["job_id"] == job_id and resumed.steps[2]["attempts"][0]["status"] == "CANCELLED"
    assert np.array_equal(final_latents(resumed), final_latents(reference))


def test_cancel_of_a_local_job_from_another_process_says_there_is_nothing_to_cancel(models, reference, tmp_path):
    with pytest.raises(jobs.Interrupted):
        submit(models, tmp_path, on_event=stop_after("submitted", 1))
    run_id = next(tmp_path.glob("*.json")).stem
    jobs.LIVE_JOBS.pop(jobs.JobRecord.load(tmp_path, run_id).steps[1]["job_id"])  # as in a new process
    proc = run("jobs", "cancel", run_id, "--jobs-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ended with the process that submitted it; nothing to cancel" in proc.stdout
    record = jobs.JobRecord.load(tmp_path, run_id)
    assert record.data["status"] == "cancelled" and record.steps[1]["status"] == "submitted"
    resumed = jobs.resume(run_id, tmp_path, progress=False, log=lambda *_: None)
    assert resumed.data["status"] == "completed"
    assert np.array_equal(final_latents(resumed), final_latents(reference))


def test_cancel_of_a_completed_run_says_nothing_to_cancel_exits_0_and_writes_nothing(reference):
    before = reference.path.read_bytes()
    proc = run("jobs", "cancel", reference.run_id, "--jobs-dir", reference.path.parent)
    assert proc.returncode == 0 and f"run {reference.run_id} is complete: nothing to cancel" in proc.stdout
    assert reference.path.read_bytes() == before


def test_qpu_usage_is_recorded_per_step_and_totalled_in_status(reference, tmp_path):
    from qhybrid.quantum.primitives.runtime import job_usage

    # local testing mode: None per step (the runtime's "0 s" for local jobs is not a QPU's)
    assert all("qpu_seconds" in s and s["qpu_seconds"] is None for s in reference.steps)
    assert "QPU usage  not reported (local testing mode)" in jobs.status_lines(reference)
    # what job_usage reads: a runtime job's metrics()["usage"] (a local one reports 0 s; "complete"
    # from qiskit-ibm-runtime 0.51, no status before) ...
    seconds, status = job_usage(jobs.LIVE_JOBS[reference.steps[0]["job_id"]])
    assert seconds == 0.0 and status in ("complete", None)
    assert job_usage(failing_job("no metrics")) == (None, None)  # ... and None for a job without metrics
    data = json.loads(reference.path.read_text())
    data["backend"] = {"name": "ibm_torino", "local_testing_mode": False}
    del data["estimate"]  # as in a record submitted before runs were estimated: usage alone
    for s, seconds in zip(data["steps"], (2.0, 3.5, None, 4.0)):
        s.update(qpu_seconds=seconds, qpu_usage_status=None if seconds is None else "complete")
    lines = jobs.status_lines(jobs.JobRecord(tmp_path / "ibm.json", data))
    assert "QPU usage  9.5 s over 3 jobs; not reported for 1 jobs" in lines
    assert not any(line.startswith("estimate") for line in lines)


def test_the_runs_of_one_submit_share_a_group_id_shown_by_list_and_status(models, tmp_path):
    pair = submit(models, tmp_path, steps=1, seeds=[3, 4])
    (single,) = submit(models, tmp_path, steps=1, seeds=[5])
    group = pair[0].data["group"]["id"]
    assert pair[1].data["group"] == {"id": group, "runs": [r.run_id for r in pair]}
    assert group.startswith(pair[0].run_id[:15]) and single.data["group"]["id"] != group
    listing = run("jobs", "list", "--jobs-dir", tmp_path).stdout.splitlines()
    for record in (*pair, single):
        (line,) = [ln for ln in listing if ln.startswith(record.run_id)]
        assert line.rstrip().endswith(record.data["group"]["id"])
    status = run("jobs", "status", pair[1].run_id, "--jobs-dir", tmp_path).stdout
    assert f"group      {group} (2 runs submitted together)" in status


def test_a_malformed_instance_crn_in_the_environment_is_named_in_one_line(monkeypatch, tmp_path):
    from qhybrid.quantum.primitives.runtime import crn_problem, runtime_service

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", "crn:v1:broken")
    runtime_service.cache_clear()
    try:
        with pytest.raises(jobs.RuntimeTargetError) as caught:  # before qiskit-ibm-runtime's AttributeError
            runtime_service()
    finally:
        runtime_service.cache_clear()
    line = str(caught.value)
    assert "\n" not in line and TOKEN not in line and "AttributeError" not in line
    assert "the IBM Quantum instance 'crn:v1:broken' (from QISKIT_IBM_INSTANCE) is not a valid CRN" in line
    assert "copy the instance's CRN from its page on quantum.cloud.ibm.com" in line
    assert crn_problem("crn:v1:bluemix:public:quantum-computing:us-east:a/0123abcd:4567ef::") is None
    assert crn_problem("ibm-q/open/main") is None  # not a CRN: the runtime's business


@pytest.mark.slow  # a real process: the runtime reads the saved-accounts file's path at import
def test_a_malformed_instance_crn_in_the_saved_account_is_named_in_one_line(models, tmp_path):
    """qiskit-ibm-runtime's own AttributeError on the malformed CRN is mapped to the same line."""
    home = tmp_path / "home"
    (home / ".qiskit").mkdir(parents=True)
    (home / ".qiskit" / "qiskit-ibm.json").write_text(json.dumps({"default-ibm-quantum-platform": {
        "channel": "ibm_quantum_platform", "token": TOKEN, "instance": "crn:v1:broken", "is_default_account": True}}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = run_process("jobs", "submit", "--model", models / "ldm-hybrid", "--backend", "ibm_torino",
                       "--jobs-dir", tmp_path / "jobs", env={**clean, "HOME": str(home)})
    line = one_line_error(proc, code=1)
    assert "the IBM Quantum instance 'crn:v1:broken' (from the saved account) is not a valid CRN" in line
    assert "quantum.cloud.ibm.com" in line and TOKEN not in proc.stdout + proc.stderr
    assert not (tmp_path / "jobs").exists()


# --- the QPU cost estimate (--dry-run, --max-qpu-seconds) ----------------------------------------
def submit_args(models, jobs_dir, *extra):
    """'qhybrid jobs submit' on the tiny hybrid model: 2 chains, 3 steps, seed 3."""
    return ["jobs", "submit", "--model", models / "ldm-hybrid", "--backend", BACKEND, "--n", "2", "--steps", "3",
            "--seed", "3", "--jobs-dir", jobs_dir, *extra]


def test_dry_run_submits_and_records_nothing_and_counts_what_a_real_submit_of_the_same_arguments_records(
        models, tmp_path):
    jobs_dir = tmp_path / "jobs"
    live = set(jobs.LIVE_JOBS)
    proc = run(*submit_args(models, jobs_dir, "--dry-run"))
    assert proc.returncode == 0, proc.stderr
    # nothing submitted (no job in this process), no record; the estimate's own file only
    assert set(jobs.LIVE_JOBS) == live
    assert [p.relative_to(jobs_dir).parts[0] for p in jobs_dir.rglob("*") if p.is_file()] == ["dry-runs"]
    (saved,) = (jobs_dir / "dry-runs").glob("*.json")
    assert "no job records" in run("jobs", "list", "--jobs-dir", jobs_dir).stdout
    estimate = json.loads(saved.read_text())
    # the printed numbers: an estimate, its counts and its QPU seconds
    out = proc.stdout
    assert "an ESTIMATE, nothing was submitted" in out and f"written    {saved}" in out
    assert f"executions {estimate['executions']} jobs (3 steps × 1 run)" in out
    assert f"bindings   {estimate['bindings_per_execution']} per execution (2 chains × " in out
    assert f"shots      {estimate['shots_per_execution']:,} per execution" in out
    assert f"{estimate['shots_per_image']:,.0f} per image" in out
    assert f"{estimate['qpu_seconds_per_execution']:.1f} s per execution" in out
    assert (f"{estimate['qpu_seconds_per_image']:.1f} s per image; "
            f"{estimate['qpu_seconds_per_run']:.1f} s per run") in out
    assert "includes" in out and "excludes" in out
    # --json prints the same estimate and writes nothing more
    printed = json.loads(run(*submit_args(models, jobs_dir, "--dry-run", "--json")).stdout)
    assert {k: v for k, v in printed.items() if k != "created"} == {k: v for k, v in estimate.items() if k != "created"}
    assert len(list((jobs_dir / "dry-runs").glob("*.json"))) == 1
    # a real submit of the same arguments: its jobs, bindings and shots are the estimate's, and it keeps the estimate
    assert run(*submit_args(models, jobs_dir)).returncode == 0
    (path,) = jobs_dir.glob("*.json")
    record = jobs.JobRecord.load(jobs_dir, path.stem)
    assert len([s["job_id"] for s in record.steps if s["job_id"]]) == estimate["executions"]
    for step in record.steps:
        assert step["bindings"] == estimate["bindings_per_execution"]
        # the executor program each job sent (TREX's calibration circuits and all) is what was counted
        assert step["program_shots"] == estimate["shots_per_execution"] > step["bindings"] * step["shots"]
        assert step["program_circuits"] == estimate["circuits_per_execution"]
        assert step["program"] == "executor" and step["post_processor"] == {"version": "v0.1"}
    cost = next(line for line in jobs.status_lines(record) if line.startswith("cost"))
    assert f"{estimate['shots_per_image']:,.0f} shots per image" in cost
    assert {k: v for k, v in record.data["estimate"].items() if k != "created"} == \
        {k: v for k, v in estimate.items() if k != "created"}


def test_the_estimate_is_proportional_to_steps_and_its_shot_time_to_shots(models):
    """Per run, QPU seconds = steps x (a fixed cost per job + shots x a time per shot): twice the
    steps cost twice; twice the shots double the shots and the shot-dependent time per job."""
    def estimate(steps, shots):
        return jobs.estimate(models / "ldm-hybrid", BACKEND, n=2, steps=steps, shots=shots)

    base, more_steps, more_shots = estimate(2, 1024), estimate(4, 1024), estimate(2, 2048)
    assert more_steps["executions"] == 2 * base["executions"]
    assert more_steps["qpu_seconds_per_run"] == pytest.approx(2 * base["qpu_seconds_per_run"])
    assert more_steps["shots_per_image"] == 2 * base["shots_per_image"]
    assert more_shots["shots_per_execution"] == 2 * base["shots_per_execution"]
    overhead = base["job_overhead_seconds"]
    assert more_shots["qpu_seconds_per_execution"] - overhead == pytest.approx(
        2 * (base["qpu_seconds_per_execution"] - overhead))
    assert more_shots["qpu_seconds_per_run"] > base["qpu_seconds_per_run"] > 0


def test_max_qpu_seconds_below_the_estimate_refuses_in_one_line_exit_2_and_writes_nothing(models, tmp_path):
    total = jobs.estimate(models / "ldm-hybrid", BACKEND, n=2, steps=3, seeds=[3])["qpu_seconds"]
    limit = f"{total * 0.9:.2f}"
    jobs_dir = tmp_path / "jobs"
    live = set(jobs.LIVE_JOBS)
    for extra in ([], ["--dry-run"]):  # a submit and a dry run refuse alike
        line = one_line_error(run(*submit_args(models, jobs_dir, "--max-qpu-seconds", limit, *extra)), code=2)
        assert f"the estimated QPU time, {total:.1f} s" in line
        assert f"exceeds --max-qpu-seconds {float(limit):g} s" in line
        assert "lower --n, --steps or --shots" in line and "Open Plan allows 600 s per 28 days" in line
    assert not jobs_dir.exists() and set(jobs.LIVE_JOBS) == live


def test_max_qpu_seconds_above_the_estimate_lets_the_run_complete(models, tmp_path):
    total = jobs.estimate(models / "ldm-hybrid", BACKEND, n=2, steps=3, seeds=[3])["qpu_seconds"]
    proc = run(*submit_args(models, tmp_path, "--max-qpu-seconds", f"{total * 1.1:.2f}"))
    assert proc.returncode == 0, proc.stderr
    assert f"QPU estimate: {total:.1f} s for 1 run" in proc.stdout
    (path,) = tmp_path.glob("*.json")
    assert jobs.read_record(path)["status"] == "completed"


def test_status_shows_the_estimate_beside_the_measured_qpu_seconds(reference, tmp_path):
    estimate = reference.data["estimate"]
    lines = jobs.status_lines(reference)
    assert (f"estimate   {estimate['qpu_seconds_per_run']:.1f} s QPU time for the run (4 jobs × "
            f"{estimate['qpu_seconds_per_execution']:.1f} s: 2 s per job + {estimate['shots_per_execution']:,} shots") \
        in next(line for line in lines if line.startswith("estimate"))
    # as a run on IBM Quantum whose service reported the QPU seconds of 3 of its 4 jobs
    data = json.loads(reference.path.read_text())
    data["backend"] = {"name": "ibm_torino", "local_testing_mode": False}
    for s, seconds in zip(data["steps"], (2.0, 3.5, None, 4.0)):
        s.update(qpu_seconds=seconds, qpu_usage_status=None if seconds is None else "complete")
    expected = 3 * estimate["qpu_seconds_per_execution"]
    lines = jobs.status_lines(jobs.JobRecord(tmp_path / "ibm.json", data))
    assert (f"QPU usage  9.5 s over 3 jobs; not reported for 1 jobs; estimated {expected:.1f} s for those jobs "
            f"(measured/estimated {9.5 / expected:.2f})") in lines


def test_resilience_level_2_counts_every_shot_once_per_zne_noise_factor(models):
    """--max-qpu-seconds must not be passed by choosing ZNE. Legacy path: a level-2 run's shot time
    counts ZNE_NOISE_FACTORS times, the fixed cost per job once. Executor path: the runtime's own
    pre-processing counts the folded circuits, so at least that much (plus TREX's calibration)."""
    for primitive in ("estimator", "executor"):
        plain = jobs.estimate(models / "ldm-hybrid", BACKEND, n=2, steps=2, resilience_levels=[0], primitive=primitive)
        both = jobs.estimate(models / "ldm-hybrid", BACKEND, n=2, steps=2, resilience_levels=[0, 2], primitive=primitive)
        overhead = plain["job_overhead_seconds"] * plain["steps"]
        shot_time = plain["qpu_seconds"] - overhead
        zne_floor = 2 * overhead + (1 + jobs.ZNE_NOISE_FACTORS) * shot_time
        if primitive == "estimator":
            assert both["qpu_seconds"] == pytest.approx(zne_floor)
        else:
            assert both["qpu_seconds"] > zne_floor * 1.01
        assert both["zne_noise_factors"] == jobs.ZNE_NOISE_FACTORS and plain["zne_noise_factors"] is None
    with pytest.raises(jobs.InputError, match="ZNE counted at 3 noise factors"):
        jobs.check_qpu_budget(both, plain["qpu_seconds"] * 2)
