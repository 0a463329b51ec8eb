"""Property-based tests (hypothesis): circuit specs, the noise scheduler, the folder loader and job
records, each over many drawn inputs rather than a handful of fixed ones."""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from qiskit.quantum_info import Statevector

from qhybrid.data.loaders import load_dataset
from qhybrid.diffusion.scheduler import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseScheduler,
    SchedulerConfig,
)
from qhybrid.quantum import (
    CircuitSpec,
    ExactEstimator,
    build_circuit,
    build_observables,
)
from qhybrid.quantum.circuits import ANSATZE, ENCODINGS, ENTANGLEMENTS
from qhybrid.quantum.primitives.runtime import RuntimeOptions
from qhybrid.workflows import jobs

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- CircuitSpec ---------------------------------------------------------------------------------
@st.composite
def sparse_label(draw, num_qubits: int) -> str:
    """A sparse Pauli label on distinct valid qubits, e.g. 'Z0', 'X1 Y3', 'Z0Z2'."""
    qubits = draw(st.lists(st.integers(0, num_qubits - 1), min_size=1, max_size=num_qubits, unique=True))
    paulis = draw(st.lists(st.sampled_from("XYZ"), min_size=len(qubits), max_size=len(qubits)))
    sep = draw(st.sampled_from([" ", ""]))
    return sep.join(f"{p}{q}" for p, q in zip(paulis, qubits))


@st.composite
def circuit_specs(draw) -> CircuitSpec:
    n = draw(st.integers(1, 5))
    observables = draw(st.none() | st.lists(sparse_label(n), min_size=1, max_size=4))
    kwargs = dict(num_qubits=n, ansatz=draw(st.sampled_from(sorted(ANSATZE))),
                  encoding=draw(st.sampled_from(ENCODINGS)), reps=draw(st.integers(1, 3)),
                  entanglement=draw(st.sampled_from(ENTANGLEMENTS)))
    if observables is not None:
        kwargs["observables"] = tuple(observables)
    return CircuitSpec(**kwargs)


@FAST
@given(spec=circuit_specs(), seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 3))
def test_circuit_spec_builds_round_trips_and_matches_statevector(spec, seed, rows):
    assert CircuitSpec.from_json(spec.to_json()) == spec
    assert CircuitSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    circuit, inputs, weights = build_circuit(spec)
    assert circuit.num_qubits == spec.num_qubits
    assert circuit.num_parameters == len(inputs) + len(weights) == spec.num_inputs + spec.num_weights
    observables = build_observables(spec)
    assert len(observables) == spec.num_outputs
    values = np.random.default_rng(seed).uniform(-2 * np.pi, 2 * np.pi, size=(rows, circuit.num_parameters))
    result = ExactEstimator().run([(circuit, obs, values) for obs in observables]).result()
    ours = np.stack([r.data.evs for r in result], axis=1)  # (rows, observables)
    assert ours.shape == (rows, len(observables))
    assert np.all(np.abs(ours) <= 1 + 1e-12)
    reference = np.array([[Statevector(circuit.assign_parameters(v)).expectation_value(o).real
                           for o in observables] for v in values])
    np.testing.assert_allclose(ours, reference, atol=1e-9, rtol=0)


# --- noise scheduler -----------------------------------------------------------------------------
@st.composite
def schedulers(draw) -> NoiseScheduler:
    config = SchedulerConfig(num_train_timesteps=draw(st.integers(2, 2000)),
                             beta_schedule=draw(st.sampled_from(BETA_SCHEDULES)),
                             prediction_type=draw(st.sampled_from(PREDICTION_TYPES)))
    return NoiseScheduler(config)


def _latents(seed: int, batch: int):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 2, 3, 3)
    return (torch.randn(shape, generator=gen, dtype=torch.float64),
            torch.randn(shape, generator=gen, dtype=torch.float64))


@FAST
@given(sched=schedulers())
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(sched):
    a = sched.alphas_cumprod
    assert a.shape == (sched.num_train_timesteps,)
    assert torch.all(a > 0) and torch.all(a < 1)
    assert torch.all(a[1:] < a[:-1])
    assert torch.all(sched.betas > 0) and torch.all(sched.betas < 1)


@FAST
@given(sched=schedulers(), data=st.data(), seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4))
def test_true_noise_recovers_z0_for_any_t(sched, data, seed, batch):
    T = sched.num_train_timesteps
    t = torch.tensor(data.draw(st.lists(st.integers(0, T - 1), min_size=batch, max_size=batch)))
    z0, eps = _latents(seed, batch)
    z_t = sched.add_noise(z0, eps, t)
    target = sched.target(z0, eps, t)  # what a perfect denoiser outputs, for either prediction type
    z0_hat, eps_hat = sched.predict_z0_eps(target, z_t, t)
    # the epsilon form divides by sqrt(a_t): float64 rounding grows like 1/sqrt(a_t) at the noisy end
    tol = 1e-12 / float(sched.alphas_cumprod[t].min().sqrt()) + 1e-12
    torch.testing.assert_close(z0_hat, z0, atol=tol, rtol=1e-9)
    torch.testing.assert_close(eps_hat, eps, atol=1e-9, rtol=1e-9)
    # one scalar t for the whole batch takes the same path
    k = int(t[0])
    z0_k, _ = sched.predict_z0_eps(sched.target(z0, eps, k), sched.add_noise(z0, eps, k), k)
    torch.testing.assert_close(z0_k, z0, atol=tol, rtol=1e-9)


@FAST
@given(sched=schedulers(), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_ddim_eta0_from_exact_noise_lands_on_the_prev_marginal(sched, data, seed):
    T = sched.num_train_timesteps
    t = data.draw(st.integers(0, T - 1), label="t")
    t_prev = data.draw(st.integers(-1, t - 1), label="t_prev")
    z0, eps = _latents(seed, 2)
    z_t = sched.add_noise(z0, eps, torch.tensor(t))
    z_prev = sched.ddim_step(sched.target(z0, eps, torch.tensor(t)), t, t_prev, z_t, eta=0.0)
    a_prev = float(sched.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    expected = np.sqrt(a_prev) * z0 + np.sqrt(1 - a_prev) * eps
    tol = 1e-12 / float(sched.alphas_cumprod[t].sqrt()) + 1e-12
    torch.testing.assert_close(z_prev, expected, atol=tol, rtol=1e-9)



@settings(max_examples=25, deadline=None)
@example(steps=1000, beta_end=0.999)
@given(steps=st.integers(2, 2000), beta_end=st.floats(0.021, 0.999))
def test_every_accepted_linear_schedule_keeps_alphas_positive(steps, beta_end):
    """A schedule whose signal level underflows is refused with a message; any other works."""
    try:
        sched = NoiseScheduler(SchedulerConfig(num_train_timesteps=steps, beta_schedule="linear", beta_end=beta_end))
    except ValueError as exc:
        assert "lower beta_end" in str(exc)
        return
    assert torch.all(sched.alphas_cumprod > 0)
    z0, eps = _latents(0, 1)
    t = torch.tensor([steps - 1])
    z0_hat, _ = sched.predict_z0_eps(eps, sched.add_noise(z0, eps, t), t)
    assert torch.isfinite(z0_hat).all()


# --- folder loader -------------------------------------------------------------------------------
MODE_FORMATS = [("RGB", "png"), ("L", "png"), ("RGBA", "png"), ("P", "png"), ("RGB", "jpg"), ("L", "jpg")]


@st.composite
def image_files(draw):
    mode, fmt = draw(st.sampled_from(MODE_FORMATS))
    w, h = draw(st.integers(20, 200)), draw(st.integers(20, 200))
    content = draw(st.sampled_from(["disc", "noise", "black", "white"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return mode, fmt, w, h, content, seed


def _make_image(mode, w, h, content, seed) -> Image.Image:
    rng = np.random.default_rng(seed)
    if content == "noise":
        img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    else:
        img = Image.new("RGB", (w, h), (255, 255, 255) if content == "white" else (0, 0, 0))
        if content == "disc":  # a bright field of view somewhere on a dark surround
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x1, y1 = int(rng.integers(x0 + 1, w)), int(rng.integers(y0 + 1, h))
            ImageDraw.Draw(img).ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(60, 256, 3)))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8)))
        return img
    return img.convert(mode)


@settings(max_examples=20, deadline=None)
@given(files=st.lists(image_files(), min_size=1, max_size=4), size=st.integers(16, 96))
def test_folder_images_load_as_square_rgb_uint8(files, size):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (mode, fmt, w, h, content, seed) in enumerate(files):
            img = _make_image(mode, w, h, content, seed)
            assert img.mode == mode
            img.save(folder / f"img_{i:02d}_{mode}.{fmt}")
        data = load_dataset(folder, size=size, split="all")
    assert data.images.dtype == np.uint8
    assert data.images.shape == (len(files), size, size, 3)
    assert data.size == size and len(data.labels) == len(files)



@settings(max_examples=10, deadline=None)
@example(w=64, h=48)
@given(w=st.integers(20, 200), h=st.integers(20, 200))
def test_16bit_png_keeps_its_brightness(w, h):
    """A 16-bit PNG loads like the same picture saved with 8 bits (scaled, not clipped at 255)."""
    gradient = np.linspace(0, 65535, w * h).reshape(h, w).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(gradient).save(Path(tmp) / "deep.png")
        deep = load_dataset(tmp, size=32, split="all").images
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray((gradient // 257).astype(np.uint8)).save(Path(tmp) / "flat.png")
        flat = load_dataset(tmp, size=32, split="all").images
    assert deep.shape == (1, 32, 32, 3)
    # brightness kept (clipping made it ~254); pixels may shift by a row where the crop threshold
    # falls between the two quantisations, so compare means
    assert abs(float(deep.mean()) - float(flat.mean())) < 12


# --- job records ---------------------------------------------------------------------------------
@st.composite
def run_plans(draw):
    """A valid record as jobs.submit writes it, and a sequence of (step, choice) updates."""
    steps = draw(st.integers(1, 4))
    options = RuntimeOptions(shots=draw(st.integers(1, 100_000)), resilience_level=draw(st.sampled_from([None, 0, 1, 2])),
                             twirling=draw(st.booleans()), dd=draw(st.booleans()),
                             optimization_level=draw(st.integers(0, 3)), seed_transpiler=draw(st.integers(0, 100)))
    backend = draw(st.sampled_from(["fake_manila", "ibm_torino", "ibm_brisbane"]))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = draw(st.sampled_from(["session", "batch", "job"]))
    n = draw(st.integers(1, 64))
    updates = draw(st.lists(st.tuples(st.integers(0, steps - 1), st.integers(0, 3)), max_size=40))
    metadata = draw(st.dictionaries(st.text(max_size=8), st.one_of(
        st.none(), st.booleans(), st.integers(-2**53, 2**53), st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12)), max_size=3))
    return dict(steps=steps, options=options, backend=backend, seed=seed, mode=mode, n=n, updates=updates,
                metadata=metadata)


def _new_record(path_dir: Path, plan: dict) -> jobs.JobRecord:
    """The record exactly as jobs.submit() builds it, before its first save."""
    model = Path("/work/runs/demo/ldm-hybrid")
    opts, backend = plan["options"], plan["backend"]
    local = jobs.is_local(backend)
    run_id = jobs._new_run_id(model, backend, plan["seed"], opts.resilience_level)
    assert jobs.RUN_ID_PATTERN.match(run_id)
    data = {
        "format": jobs.RECORD_FORMAT, "format_version": jobs.RECORD_VERSION, "run_id": run_id,
        "status": "created", "created": jobs._now(), "updated": jobs._now(),
        "backend": {"name": backend, "local_testing_mode": local},
        "mode": {"requested": plan["mode"], "used": None, "id": None, "note": None},
        "options": opts.to_dict(),
        "ignored_locally": opts.ignored_locally() if local else [],
        "sampling": {"n": plan["n"], "steps": plan["steps"], "seed": plan["seed"], "sampler": "ddim", "eta": 0.0},
        "model": {"path": str(model), "sha256": "ab" * 32, "kind": "hybrid"},
        "circuit": {}, "initial_latents": "initial_latents.npy", "images": None,
        "steps": [{"index": k, "timestep": None, "status": "pending", "job_id": None} for k in range(plan["steps"])],
    }
    record = jobs.JobRecord(path_dir / f"{run_id}.json", data)
    # what submit() adds before the first save: timesteps and the circuit summary
    for k, step in enumerate(record.steps):
        step["timestep"] = int(999 - k * (1000 // plan["steps"]))
    record.data["circuit"] = {"qpy_file": "circuit.qpy", "qasm3_file": "circuit.qasm3", "qpy_sha256": "cd" * 32,
                              "qasm3_sha256": "ef" * 32, "num_qubits": 3, "depth": 17, "two_qubit_gates": 4,
                              "ops": {"rz": 12, "sx": 6, "cz": 4}, "physical_qubits": [0, 1, 2],
                              "observables": [[["IIZ", 1.0]], [["IZI", 1.0]], [["ZII", 1.0]]],
                              "spec": CircuitSpec(num_qubits=3, reps=1).to_dict()}
    return record


_job_counter = iter(range(10**9))


def _apply(record: jobs.JobRecord, k: int, choice: int, metadata: dict, previous: dict) -> None:
    """Move step k along one transition a run can make (choice picks among the allowed ones).
    ``previous`` holds, per step, the earlier attempt that _submit keeps in memory while submitting."""
    step = record.steps[k]
    status = step["status"]
    if status in ("pending", "failed") and (status == "pending" or choice % 2 == 0):
        # pending -> submitting (also failed -> submitting: 'jobs resume' resubmits a failed step)
        previous[k] = {"job_id": step.get("job_id"), "status": step.get("job_status"), "note": step.get("note")}
        step.update({"status": "submitting", "tag": jobs.job_tag(record.run_id, k), "submitting_at": jobs._now()})
    elif status == "failed":
        # failed -> pending, the failed job kept as an attempt
        step.setdefault("attempts", []).append({"job_id": step["job_id"], "status": step.get("job_status"),
                                                "note": step.get("note")})
        step.update({"status": "pending", "job_id": None, "job_status": None, "note": None})
    elif status == "submitting":
        earlier = previous.pop(k, None)
        if choice == 3:  # nothing reached the service: back to pending
            step["status"] = "pending"
            return
        if earlier and earlier["job_id"]:
            step.setdefault("attempts", []).append(earlier)
        step.update({"status": "submitted", "job_id": f"job-{next(_job_counter):06d}", "job_status": "SUBMITTED",
                     "submitted_at": jobs._now(), "finished_at": None, "note": None,
                     "mode": record.data["mode"]["requested"], "mode_id": None, "simulator_seed": 17})
        record.data["status"] = "running"
    elif status == "submitted":
        if choice == 0:  # the job ended badly
            step.update({"status": "failed", "job_status": "ERROR", "finished_at": jobs._now(), "note": "ERROR"})
            record.data["status"] = "failed"
        elif choice == 1:  # a local job lost with its process
            step.update({"status": "pending", "job_status": "LOST", "note": "resubmitted"})
        else:
            step.update({"status": "result", "job_status": "DONE", "result_file": f"step_{k:04d}_evs.npy",
                         "finished_at": jobs._now(), "shots": record.data["options"]["shots"],
                         "metadata": metadata})
    elif status == "result":
        step.update({"status": "done", "latents_file": f"step_{k:04d}_latents.npy"})
        if record.next_step() is None:
            record.data["status"] = "completed"
            record.data["images"] = {"dir": f"{record.run_id}/samples", "count": record.data["sampling"]["n"],
                                     "decoded_at": jobs._now()}
    # 'done' is final: nothing to do


@settings(max_examples=40, deadline=None)
@given(plan=run_plans())
def test_job_record_survives_every_update_sequence(plan):
    with tempfile.TemporaryDirectory() as tmp:
        record = _new_record(Path(tmp), plan)
        record.save()
        assert jobs.read_record(record.path) == record.data
        previous: dict = {}
        for k, choice in plan["updates"]:
            _apply(record, k, choice, plan["metadata"], previous)
            assert set(s["status"] for s in record.steps) <= set(jobs.STEP_STATES)
            record.save()
            assert jobs._record_problem(record.data) is None
            assert jobs.read_record(record.path) == record.data
            assert jobs.JobRecord.load(tmp, record.run_id).data == record.data
