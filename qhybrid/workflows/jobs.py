"""Sampling a hybrid LDM on IBM Quantum with job records that survive crashes.

Diffusion sampling is sequential: step k+1 needs the latents of step k, so a run is one runtime
job per denoising step, and each job is one PUB holding every chain (the chains are the rows of
the parameter-value array; see :mod:`qhybrid.quantum.primitives.runtime`). The classical parts of
the denoiser run here, between the jobs.

A run is a JSON record ``jobs/<run_id>.json`` plus a folder ``jobs/<run_id>/`` with the ISA
circuit (QPY and QASM 3), the initial latents, the expectation values each job returned and the
latents after each completed step. Every change is written atomically and *before* the next
action: a job id is on disk before the process waits for it, and a result before it is used. So
a crash at any moment leaves a valid record, and ``resume`` continues from the last completed
step without submitting a finished or still-running step again. Local testing-mode jobs
(``fake_*`` backends) live inside their process; a record that outlives its process marks such a
job ``lost`` and resubmits it (simulation is free), which IBM Quantum jobs never need.

Several seeds or resilience levels make several independent runs (one record each) that advance
together: each round submits one job per run, in one Batch by default. A run whose job fails or
whose service call fails stops; its siblings go on.

How a step runs. A job can take days, so waiting for it must not happen inside a denoiser call
(nor must Ctrl-C, a failed job, or fetch's "submit nothing" unwind through Qiskit's QNN, torch's
autograd function and the denoiser). The denoiser calls its one quantum block once per step, and
the block's inputs never depend on its outputs, so a step is two ordinary denoiser calls with the
job handled between them, as an explicit state machine of the runner (:meth:`JobRunner._step`):

1. *note*: the denoiser runs with a runtime-estimator executor that only notes the PUB its
   quantum block sends (the ISA circuit and one parameter row per chain) and answers zeros; that
   output is thrown away. The rows are saved (``step_KKKK_values.npy``) before the submission.
2. the PUB is submitted, its job polled and its result saved: ``pending`` -> ``submitting`` ->
   ``submitted`` -> ``result`` (or ``failed``), with no model code on the stack.
3. *replay*: the denoiser runs again, through the same :func:`qhybrid.diffusion.sampling.denoise_step`
   as local sampling, with an executor that answers with the saved result; the runner checks that
   it asked with exactly the saved rows, then saves the latents: ``done``.

Executors never raise; the runner reads what they noted after the call. Records written before
the rows were saved (by qhybrid 0.1: format version 1 without ``values_file``) resume the same way, without that check for the
steps that lack them. :class:`JobRunner` reports ``on_event(event, record, k)`` after a step's
job id (``"submitted"``) or latents (``"done"``) are on disk, for progress displays and tests.

What a record fixes and keeps. At submission it stores what defines the run (options, sampling,
backend, the model's weights hash, the circuit's hashes: :func:`fixed_part`) and the SHA-256 of
that; ``resume`` and ``fetch`` refuse a record edited since, as its steps ran with the recorded
values (records of qhybrid 0.1 have no hash and are not checked). It keeps the software versions
and backend calibration of each process that ran steps (``provenance``), the QPU time the service
charged each job (``qpu_seconds``; None in local testing mode) and the ``group`` of runs one submit
created. A run recorded as running whose lock no process holds was killed: ``list`` and ``status``
show it as stopped (:func:`effective_status`) without rewriting it. :func:`cancel` cancels a run's
unfinished job and marks the run ``cancelled``; ``resume`` submits that step again.

What a run will cost. QPU time is the scarce thing (the Open Plan has 10 minutes per 28 days), so
before a submission :func:`qpu_estimate` works out what the runs would take from the ISA circuit
they would send: jobs, bindings and shots, and QPU seconds by IBM's baseline formula (a fixed cost
per job plus shots x (circuit + measurement + reset + repetition delay)). :func:`estimate` is the
dry run (nothing written, nothing submitted); ``submit(max_qpu_seconds=S)`` refuses runs estimated
above S before writing anything; each record keeps its ``estimate`` so that ``status`` shows it
beside the QPU seconds the service reports.

Where the classical parts run. The denoiser's layers and the VAE run on ``device``
(:mod:`qhybrid.devices`; the CPU by default); the initial latents are drawn on the CPU from the
run's seed and every latent is saved from the CPU, so a seed starts the same run on any device. The
device is not part of what a run is fixed to: a run may be resumed or fetched on another one. Each
process's device is kept in ``provenance`` and each step's in the step (``device``: where its block
inputs were computed); a step's inputs recomputed on another device are checked to
:data:`ROWS_ATOL_ACROSS_DEVICES` (floating-point results differ between devices) instead of exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io as _io
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qhybrid import io
from qhybrid.devices import resolve_device
from qhybrid.diffusion.sampling import denoise_step, predict
from qhybrid.errors import InputError, QHybridError, one_line, param
from qhybrid.models import checkpoint as ckpt
from qhybrid.quantum.calibration import calibration_date
from qhybrid.quantum.circuits import two_qubit_gate_count
from qhybrid.quantum.mitigation import (
    Mitigation,
    post_processor,
    program_cost,
    program_counts,
)
from qhybrid.quantum.primitives.pubs import measurement_bases
from qhybrid.quantum.primitives.runtime import (
    FINAL_STATES,
    MODES,
    PROGRAM_IDS,
    IsaCircuit,
    RuntimeOptions,
    RuntimeTargetError,
    evs_table,
    is_local,
    job_status,
    job_usage,
    runtime_service,
    submit_pub,
)
from qhybrid.quantum.targets import Target
from qhybrid.versions import software_versions

RECORD_FORMAT = "qhybrid-job-record"
#: The QPY version ISA circuits are stored in: qiskit 2.4's, the oldest qiskit qhybrid supports, so
#: that a run recorded under a newer qiskit resumes under any supported one.
RECORD_QPY_VERSION = 17
RECORD_VERSION = 1
DEFAULT_JOBS_DIR = "jobs"
STEP_STATES = ("pending", "submitting", "submitted", "result", "done", "failed")
#: Run statuses in which a qhybrid process holds the run's lock; a run left in one of them by a
#: killed process is shown as "stopped" (see :func:`effective_status`).
ACTIVE_STATES = ("created", "running")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Jobs submitted by this process, by id: how a local testing-mode job is found again.
LIVE_JOBS: dict[str, object] = {}
#: ``on_event(event, record, k)``: ``"submitted"`` (step k's job id is saved) or ``"done"`` (its
#: latents are saved). An exception it raises stops the runner (KeyboardInterrupt: like Ctrl-C).
EventHook = Callable[[str, "JobRecord", int], None]
#: How far (radians) a step's block inputs, recomputed on another device than the one that computed
#: the inputs its job ran with (or on a GPU at all), may differ from them. Float arithmetic differs between devices (a
#: GPU's TF32 convolutions keep 10 mantissa bits, about 1e-3 relative), so they cannot be compared
#: exactly there; this bound is chosen, not measured (no GPU was at hand), well above such rounding
#: and well below a changed model's or software's inputs. On the CPU they must be equal.
ROWS_ATOL_ACROSS_DEVICES = 1e-2


class JobRecordError(QHybridError):
    """A job record that cannot be read or does not belong to the model it names (exit 1)."""


class Interrupted(QHybridError):
    """Ctrl-C while waiting for jobs; the record says where the run stands (exit 130)."""

    exit_code = 130


@contextmanager
def service_call(what: str, record: JobRecord, retry: str = "fetch"):
    """Turn a failure while talking to the service into one line: what failed, that the record is
    unchanged, and the command that retries."""
    try:
        yield
    except (RuntimeTargetError, JobRecordError):  # already one line naming the problem
        raise
    except Exception as exc:  # noqa: BLE001 - network, authentication and API errors
        raise RuntimeTargetError(f"{what} ({one_line(exc, with_type=True, limit=300)}); the record is "
                                 f"unchanged; retry with 'qhybrid jobs {retry} {record.run_id}'") from None


def job_tag(run_id: str, k: int) -> str:
    """The tag each step's job carries, so a job can be found even if its id was never saved."""
    return f"qhybrid:{run_id}:step{k}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical_sha256(value) -> str:
    return _sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


# --- what a run is fixed to -----------------------------------------------------------------------
def fixed_part(data: dict) -> dict:
    """What defines a run and must not change once its first job is submitted: the options and
    the sampling set-up its jobs ran with, the backend, the model's weights and the ISA circuit.
    (Paths, statuses and notes may change: a model folder moved with the same weights is fine.)"""
    circuit = data.get("circuit") or {}
    return {"options": data.get("options"), "sampling": data.get("sampling"),
            "backend": (data.get("backend") or {}).get("name"),
            "model_sha256": (data.get("model") or {}).get("sha256"),
            "initial_latents_sha256": data.get("initial_latents_sha256"),
            "circuit": {"qpy_sha256": circuit.get("qpy_sha256"), "qasm3_sha256": circuit.get("qasm3_sha256")}}


def seal(data: dict) -> None:
    """Store the fixed part and the SHA-256 of its canonical JSON (at submission, once the circuit
    is written); the copy is kept so that a refusal can name the fields that were edited."""
    data["fixed"] = fixed_part(data)
    data["fixed_sha256"] = _canonical_sha256(data["fixed"])


_MISSING = object()


def _differences(old, new, prefix: str = "") -> list[str]:
    """The dotted names of the fields where two fixed parts differ (``options.shots``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        names = []
        for key in sorted(set(old) | set(new), key=str):
            names += _differences(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}{key}.")
        return names
    return [] if old == new else [prefix.rstrip(".")]


def check_fixed(record: JobRecord) -> None:
    """Refuse a record whose fixed part was edited after submission: its finished steps ran with
    the recorded values, so going on with others would mix two runs in one. Records written
    before qhybrid sealed them (no ``fixed_sha256``) are accepted as they are."""
    data = record.data
    sealed = data.get("fixed_sha256")
    if sealed is None and not any(key in data for key in ("fixed", "provenance")):
        return  # written before records were sealed
    if sealed is not None and _canonical_sha256(fixed_part(data)) == sealed:
        return
    kept = data.get("fixed")
    if sealed is not None and isinstance(kept, dict) and _canonical_sha256(kept) == sealed:
        fields = _differences(kept, fixed_part(data)) or ["fixed"]
    else:  # the kept copy or the hash itself was edited
        fields = ["fixed", "fixed_sha256"]
    raise JobRecordError(f"job record {record.path} was edited after submission ({', '.join(fields)}): its steps "
                         "ran with the recorded values; start a new run with 'qhybrid jobs submit'")


# --- which process works on a run ------------------------------------------------------------------
def hold_lock(record: JobRecord, fix: str = "wait for it to finish or stop it first"):
    """The open lock file of a run, locked by this process (closing it releases the lock): one
    process per run. Another process holding it is a one-line :class:`JobRecordError`."""
    import fcntl

    record.path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(record.path.with_suffix(".lock"), "a")  # noqa: SIM115 - held open: it is the lock
    for _ in range(10):  # a 'jobs list' probing the lock holds it for microseconds: retry briefly
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except OSError:
            time.sleep(0.02)
    handle.close()
    raise JobRecordError(f"run {record.run_id} is being worked on by another qhybrid process (a submit, "
                         f"resume, fetch or cancel); {fix}")


def lock_held(path: Path) -> bool:
    """Whether a process holds the lock of the run recorded at ``path``: a non-blocking shared
    lock is tried and released at once. No lock file: no process ever took it. (Unreadable: we
    cannot tell, so the record is believed.)"""
    import fcntl

    try:
        handle = open(Path(path).with_suffix(".lock"), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    except OSError:
        return True
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def effective_status(path: Path, data: dict) -> tuple[str, str | None]:
    """The status to show for a record, and a note. A run recorded as "created" or "running" whose
    lock no process holds was killed (its process could not write that down): it is shown as
    "stopped"; the record is not rewritten for that (resume settles it)."""
    status = data.get("status")
    if status not in ACTIVE_STATES or lock_held(path):
        return status, None
    with suppress(OSError, ValueError):  # the run may have finished between the read and the probe
        status = json.loads(Path(path).read_text()).get("status", status)
    if status not in ACTIVE_STATES:
        return status, None
    return "stopped", f"its process ended; 'qhybrid jobs resume {data.get('run_id')}' continues"


# --- records ------------------------------------------------------------------------------------
class JobRecord:
    """One run's record: the JSON file and the folder beside it."""

    def __init__(self, path: Path, data: dict):
        self.path = Path(path)
        self.data = data

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def folder(self) -> Path:
        return self.path.with_suffix("")

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    @property
    def options(self) -> RuntimeOptions:
        """The run's runtime options; a record written before the executor path (no ``primitive``)
        ran on the legacy EstimatorV2 and goes on there."""
        return RuntimeOptions(**{"primitive": "estimator", **self.data["options"]})

    @property
    def program(self) -> str:
        """The runtime program its jobs run as (``executor``, or ``estimator`` on the legacy path)."""
        return PROGRAM_IDS[self.options.primitive]

    def save(self) -> None:
        self.data["updated"] = _now()
        io.write_json(self.path, self.data)

    def next_step(self) -> int | None:
        return next((s["index"] for s in self.steps if s["status"] != "done"), None)

    def completed_steps(self) -> int:
        return sum(s["status"] == "done" for s in self.steps)

    def write_array(self, name: str, array: np.ndarray) -> str:
        buffer = _io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array))
        io.write_bytes(self.folder / name, buffer.getvalue())
        return name

    def read_array(self, name: str) -> np.ndarray:
        path = self.folder / name
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise JobRecordError(f"{path} is missing or damaged ({exc}); the run {self.run_id} cannot continue "
                                 "from it; start a new run with 'qhybrid jobs submit'") from None

    def latents_before(self, k: int) -> torch.Tensor:
        name = self.data["initial_latents"] if k == 0 else self.steps[k - 1]["latents_file"]
        return torch.from_numpy(self.read_array(name))

    def step_seed(self, k: int) -> int:
        """Seed of the local simulator for step k: a resumed run redraws the same shots."""
        return 1 + (int(self.data["sampling"]["seed"]) * 1_000_003 + 7919 * k) % (2**31 - 2)

    @classmethod
    def load(cls, jobs_dir: str | Path, run_id: str) -> JobRecord:
        jobs_dir = Path(jobs_dir)
        if not RUN_ID_PATTERN.match(run_id or ""):
            raise InputError(f"{run_id!r} is not a run id (letters, digits, '.', '_', '-'); "
                             "'qhybrid jobs list' shows the runs")
        path = jobs_dir / f"{run_id}.json"
        if not path.exists():
            known = sorted(p.stem for p in jobs_dir.glob("*.json")) if jobs_dir.is_dir() else []
            hint = f"known runs: {', '.join(known[-5:])}" if known else f"there are no runs in {jobs_dir}/"
            raise InputError(f"no job record {path}; {hint} (records are read from {param('jobs_dir')}; "
                             "'qhybrid jobs list' shows them)")
        return cls(path, read_record(path))


def read_record(path: Path) -> dict:
    """Parse and check a record file; damage is a one-line :class:`JobRecordError`."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JobRecordError(f"{path} is not valid JSON ({exc}); qhybrid writes records atomically, so "
                             "something else changed it; restore it or start a new run") from None
    problem = _record_problem(data)
    if problem:
        raise JobRecordError(f"{path} is not a valid qhybrid job record ({problem}); restore it or start "
                             "a new run")
    return data


_RECORD_KEYS = {"run_id": str, "status": str, "created": str, "backend": dict, "mode": dict, "model": dict,
                "circuit": dict, "options": dict, "sampling": dict, "steps": list, "initial_latents": str}


#: Keys that records written by qhybrid 0.1 lack.
_OPTIONAL_KEYS = {"fixed": dict, "fixed_sha256": str, "provenance": list, "group": dict, "estimate": dict,
                  "runtime": dict}


def _record_problem(data) -> str | None:
    """Why ``data`` is not a usable record (None if it is)."""
    try:
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            return f"'format' is not {RECORD_FORMAT!r}"
        if data.get("format_version") != RECORD_VERSION:
            return f"format version {data.get('format_version')!r}; this qhybrid reads version {RECORD_VERSION}"
        for key, kind in _RECORD_KEYS.items():
            if not isinstance(data.get(key), kind):
                return f"no {key!r}" if key not in data else f"{key!r} is not a {kind.__name__}"
        if not isinstance(data["backend"].get("name"), str) or "requested" not in data["mode"]:
            return "backend.name or mode.requested is missing"
        if not isinstance(data["model"].get("path"), str) or not isinstance(data["sampling"].get("seed"), int):
            return "model.path or sampling.seed is missing"
        steps = data["steps"]
        if len(steps) != data["sampling"].get("steps"):
            return "the step list does not match sampling.steps"
        for k, step in enumerate(steps):
            if not isinstance(step, dict) or step.get("index") != k or step.get("status") not in STEP_STATES:
                return f"step {k} is malformed"
            needs = {"submitting": ("tag",), "submitted": ("job_id",), "result": ("job_id", "result_file"),
                     "done": ("job_id", "result_file", "latents_file")}.get(step["status"], ())
            if any(not step.get(key) for key in needs):
                return f"step {k} is '{step['status']}' without {', '.join(needs)}"
        for key, kind in _OPTIONAL_KEYS.items():
            if key in data and not isinstance(data[key], kind):
                return f"{key!r} is not a {kind.__name__}"
        RuntimeOptions(**{"primitive": "estimator", **data["options"]})
    except Exception as exc:  # noqa: BLE001 - any surprise in a damaged file is "not a valid record"
        return f"{type(exc).__name__}: {exc}"
    return None


def list_records(jobs_dir: str | Path) -> list[tuple[Path, dict | None, str | None]]:
    """Every ``*.json`` in ``jobs_dir``: (path, record or None, problem or None), oldest first."""
    rows = []
    for path in sorted(Path(jobs_dir).glob("*.json")):
        try:
            rows.append((path, read_record(path), None))
        except JobRecordError as exc:
            rows.append((path, None, str(exc)))
    return sorted(rows, key=lambda r: (r[1] or {}).get("created", ""))


def _new_run_id(model: Path, backend: str, seed: int, level: int | None, mitigation: Mitigation | None = None) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    level_part = "" if level is None else f"-r{level}"
    if mitigation is not None:
        level_part += f"-{mitigation.kind.replace('+', '-')}"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", model.name)
    return f"{stamp}-{name}-{backend}-s{seed}{level_part}-{secrets.token_hex(2)}"


# --- the runner ---------------------------------------------------------------------------------
@dataclass
class Advance:
    """What a pass over the runs may do."""

    submit: bool = True  # submit steps that need a job (False: fetch)
    wait: bool = True  # wait for submitted jobs (False: return once nothing can move)


@dataclass
class _Call:
    """One PUB the denoiser's quantum block sent: the ISA circuit and its parameter rows."""

    isa: IsaCircuit
    values: np.ndarray


@dataclass
class _Executor:
    """The runtime estimator's executor during one denoiser call. It notes every PUB it is given
    and answers with ``evs`` when they fit the PUB, zeros otherwise (the note pass). It never
    raises: the runner looks at ``calls`` after the denoiser returns and decides there."""

    evs: np.ndarray | None = None
    calls: list[_Call] = field(default_factory=list)

    def __call__(self, isa: IsaCircuit, values: np.ndarray) -> np.ndarray:
        values = np.array(values, dtype=np.float64)  # a copy: the rows as sent, for the checks
        self.calls.append(_Call(isa, values))
        shape = (len(isa.observables), len(values))
        if self.evs is not None and self.evs.shape == shape:
            return self.evs
        return np.zeros(shape)


@dataclass(frozen=True)
class _Outcome:
    """Where one visit left a run's current step."""

    state: str  # "done", "submitted" (just now), "waiting" (on its job), "blocked" (may not submit), "failed"
    message: str = ""


class JobRunner:
    """Advances one or more runs of the same model, backend and ISA circuit (see the module
    docstring for how a step runs)."""

    def __init__(self, records: list[JobRecord], progress: bool = True, poll: float | None = None,
                 log=print, on_event: EventHook | None = None, device=None):
        from qhybrid.diffusion.pipeline import LatentDiffusion

        self.device = resolve_device(device or "cpu")  # of the denoiser's layers and the VAE
        self.records = records
        self._locks: dict = {}  # open lock files by run id, taken by submit() and advance()
        for record in records:
            check_fixed(record)
            if "fixed_sha256" not in record.data and record.data.get("circuit"):
                # a record from before records were sealed (qhybrid 0.1): sealed as found, so that the
                # provenance this runner adds does not make it look like a sealed record stripped of its
                # seal; saved with the record's next change
                seal(record.data)
                record.data["sealed_late"] = _now()
        first = records[0].data
        self.backend_name = first["backend"]["name"]
        self.local = is_local(self.backend_name)
        self.progress = progress
        self.poll = poll if poll is not None else (0.02 if self.local else 10.0)
        self.log = log
        self.on_event = on_event
        self.submitted = 0  # jobs this runner submitted
        model_dir = Path(first["model"]["path"])
        header = ckpt.read_header(model_dir, "ldm")
        if header.get("weights_sha256") != first["model"]["sha256"]:
            raise JobRecordError(
                f"the model {model_dir} changed since run {records[0].run_id} was submitted (its weights hash "
                "differs); restore that checkpoint, or start a new run with 'qhybrid jobs submit'")
        # the VAE: where the record's --vae put it, else the one the checkpoint names (hash-checked)
        self.model, self.scheduler, self.vae, _ = LatentDiffusion.from_checkpoint(model_dir, vae=first["model"].get("vae"))
        self.model.to(self.device)
        self.vae.to(self.device)
        block = self.model.quantum_block
        if block is None:
            raise InputError(f"{model_dir} is a {self.model.cfg.kind} model with no quantum block; only hybrid "
                             "models run on IBM Quantum (sample classical ones with 'qhybrid sample')")
        opts = records[0].options
        # no transpilation here: a new run transpiles in submit(), an existing one loads its QPY
        self.model.to_target(Target("ibm", self.backend_name, {
            "optimization_level": opts.optimization_level, "seed_transpiler": opts.seed_transpiler,
            "eager_transpile": False}))
        self.estimator = block.qnn.estimator
        self.logical = block.pub_circuit  # the circuit object the QNN's PUBs carry (the ISA cache key)
        self.observables = list(block.observables)
        self.timesteps = self.scheduler.timesteps(int(first["sampling"]["steps"]))
        self._mode = None
        self._mode_used = None
        self._pubs: dict[tuple[str, int], _Call] = {}  # the note pass of a step, by (run id, step)
        self._provenance: dict | None = None  # this process's software and the backend's calibration

    def note_provenance(self, record: JobRecord) -> None:
        """Add the software versions and the backend calibration this process runs steps with to
        the record's ``provenance`` list, unless the last entry has them already: a run resumed
        by another installation, or after the backend was recalibrated, says so. Saved with the
        record's next change."""
        if self._provenance is None:
            self._provenance = {"versions": software_versions(),
                                "calibration_date": calibration_date(self.estimator.backend),
                                "device": str(self.device)}
        entries = record.data.setdefault("provenance", [])
        last = entries[-1] if entries else {}
        if {key: last.get(key) for key in self._provenance} != self._provenance:
            entries.append({"since": _now(), **self._provenance})

    def _lock(self, record: JobRecord) -> None:
        """One process per run: a second submit/resume/fetch of the same run stops at once. (A
        second call for a run this runner holds already does nothing: a lock file opened twice
        by one process would lock it out.)"""
        if record.run_id in self._locks:
            return
        try:
            self._locks[record.run_id] = hold_lock(record)
        except JobRecordError:
            self._unlock()
            raise

    def _unlock(self) -> None:
        for handle in self._locks.values():
            handle.close()  # closing releases the lock
        self._locks = {}

    # -- the ISA circuit, stored once per run ---------------------------------------------------
    def write_circuit(self, record: JobRecord, isa: IsaCircuit) -> None:
        from qiskit import qasm3, qpy

        buffer = _io.BytesIO()
        qpy.dump(isa.circuit, buffer, version=min(qpy.QPY_VERSION, RECORD_QPY_VERSION))
        qpy_bytes = buffer.getvalue()
        io.write_bytes(record.folder / "circuit.qpy", qpy_bytes)
        qasm = qasm3.dumps(isa.circuit)
        io.write_text(record.folder / "circuit.qasm3", qasm)
        ops = isa.circuit.count_ops()
        layout = isa.circuit.layout
        record.data["circuit"] = {
            "qpy_file": "circuit.qpy", "qasm3_file": "circuit.qasm3",
            "qpy_sha256": _sha256(qpy_bytes), "qasm3_sha256": _sha256(qasm.encode()),
            "num_qubits": self.logical.num_qubits, "depth": isa.circuit.depth(),
            "two_qubit_gates": two_qubit_gate_count(isa.circuit),
            "ops": dict(ops),
            "physical_qubits": list(layout.final_index_layout()) if layout is not None else None,
            "observables": [[[lbl, float(c.real)] for lbl, c in o.to_list()] for o in isa.observables],
        }

    def load_circuit(self, record: JobRecord) -> None:
        from qiskit import qpy

        info = record.data["circuit"]
        path = record.folder / info["qpy_file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JobRecordError(f"{path} is missing ({exc.strerror}); run {record.run_id} cannot continue") from None
        if _sha256(data) != info["qpy_sha256"]:
            raise JobRecordError(f"{path} does not match the hash in the record; run {record.run_id} cannot "
                                 "continue; start a new run")
        try:
            circuit = qpy.load(_io.BytesIO(data))[0]
        except Exception as exc:  # noqa: BLE001 - QiskitError: a QPY version this qiskit cannot read
            written = data[6] if len(data) > 6 and data[:6] == b"QISKIT" else "unknown"
            raise JobRecordError(
                f"{path} cannot be read by the installed qiskit {software_versions().get('qiskit')} (it reads QPY "
                f"up to version {qpy.QPY_VERSION}; the file is version {written}: "
                f"{one_line(exc, limit=150)}); install the qiskit recorded in the run's provenance "
                f"('qhybrid jobs status {record.run_id}') to continue it") from None
        self.estimator.use_isa(self.logical, circuit)
        mapped = self.estimator.isa(self.logical, self.observables).observables
        recorded = [sorted(map(tuple, obs)) for obs in info["observables"]]
        if [sorted((lbl, float(c.real)) for lbl, c in o.to_list()) for o in mapped] != recorded:
            raise JobRecordError(f"the observables of {path} do not match the record; start a new run")

    # -- execution modes ------------------------------------------------------------------------
    def _mode_for_submission(self):
        """The Session, Batch or backend the jobs go to (opened on the first submission)."""
        if self._mode is not None:
            return self._mode
        from qiskit_ibm_runtime import Batch, Session

        requested = self.records[0].data["mode"]["requested"]
        backend = self.estimator.backend
        note = None
        if requested == "job":
            mode, used = backend, "job"
        else:
            cls = Session if requested == "session" else Batch
            try:
                mode, used = cls(backend=backend), requested
            except Exception as exc:  # noqa: BLE001 - plan limits and API errors
                refused = any(w in str(exc).lower() for w in ("plan", "not authorized", "not allowed", "403"))
                if requested != "session" or not refused:
                    raise RuntimeTargetError(
                        f"could not open a {requested} on {self.backend_name} "
                        f"({one_line(exc, with_type=True, limit=300)}); retry, or use {param('mode', 'job')}") from None
                mode, used = backend, "job"
                note = (f"a session could not be opened ({one_line(exc, with_type=True, limit=300)}); the "
                        "account's plan may not allow "
                        "sessions (the Open Plan does not), so the steps run in job mode: each queues on its own")
                self.log(f"note: {note}")
        self._mode, self._mode_used = mode, used
        mode_id = getattr(mode, "session_id", None)
        for record in self.records:
            record.data["mode"].update({"used": used, "id": mode_id, "note": note})
        return mode

    def close(self) -> None:
        if self._mode is not None and hasattr(self._mode, "close"):
            try:
                self._mode.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort; jobs already run
                self.log(f"note: closing the {self._mode_used} failed ({one_line(exc, with_type=True, limit=300)})")
        self._mode = None

    # -- one step: note the PUB, run its job, replay -------------------------------------------
    def _step(self, record: JobRecord, k: int, may_submit: bool) -> _Outcome:
        """Move step k of one run as far as it goes now. Service failures raise
        :class:`RuntimeTargetError` (this run stops, the others go on)."""
        step = record.steps[k]
        if step["status"] == "submitting" and self._find_tagged(record, k) is None:
            step["status"] = "pending"  # nothing reached the service: submit (below) if allowed
        if step["status"] == "submitted":
            job = self._retrieve(record, k)  # None: a lost local job; the step is pending again
            if job is not None:
                status = self._status(job, record, k)
                if status in ("ERROR", "CANCELLED"):
                    return _Outcome("failed", self._fail(job, record, k, status))
                if status != "DONE":
                    return _Outcome("waiting")
                self._collect(job, record, k)
        if step["status"] == "result":
            self._apply(record, k)
            return _Outcome("done")
        if not may_submit:
            return _Outcome("blocked")
        self._submit(record, k)
        return _Outcome("submitted")

    def _denoiser_call(self, record: JobRecord, k: int, executor: _Executor, full_step: bool) -> torch.Tensor:
        """The denoiser on the latents before step k, its quantum block answered by ``executor``:
        just the model output (note pass), or the whole DDIM step (replay)."""
        self.estimator.executor = executor
        z = record.latents_before(k).to(self.device)
        if full_step:
            return denoise_step(self.model, self.scheduler, z, k, self.timesteps, "ddim", 0.0)
        return predict(self.model, z, self.timesteps[k])

    def _only_call(self, executor: _Executor, record: JobRecord, k: int) -> _Call:
        if len(executor.calls) != 1:
            raise InputError(f"the denoiser of run {record.run_id} evaluated its quantum block "
                             f"{len(executor.calls)} times in step {k}; a job run needs exactly one evaluation "
                             "per step (one job each)")
        return executor.calls[0]

    def _pub(self, record: JobRecord, k: int) -> _Call:
        """Step k's PUB, from a note pass (once per step and process)."""
        key = (record.run_id, k)
        if key not in self._pubs:
            executor = _Executor()
            self._denoiser_call(record, k, executor, full_step=False)
            call = self._only_call(executor, record, k)
            self._check_rows(record, k, call.values)
            self._pubs[key] = call
        return self._pubs[key]

    def bindings_per_job(self, n: int) -> int:
        """The parameter rows of one step's PUB for ``n`` chains, counted by a note pass of the
        denoiser on zero latents: the same code path as a run's first pass, so an estimate counts
        exactly what a submission sends (the count depends on n and the model, not the latents)."""
        cfg = self.model.cfg
        executor = _Executor()
        self.estimator.executor = executor
        with torch.no_grad():
            predict(self.model, torch.zeros((n, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                                            device=self.device), self.timesteps[0])
        if len(executor.calls) != 1:
            raise InputError(f"the denoiser evaluated its quantum block {len(executor.calls)} times in one step; a "
                             "job run needs exactly one evaluation per step (one job each)")
        return len(executor.calls[0].values)

    def _check_rows(self, record: JobRecord, k: int, values: np.ndarray) -> None:
        """The rows computed now must be those step k's job ran with (saved before it was
        submitted; older records lack them) and those of this process's note pass: equal when both
        were computed on the CPU, within :data:`ROWS_ATOL_ACROSS_DEVICES` otherwise (another device,
        or a GPU, where two processes may pick other kernels and round differently; a step without
        ``device`` was computed on the CPU: qhybrid ran job runs nowhere else before it recorded
        the device)."""
        step = record.steps[k]
        noted = self._pubs.get((record.run_id, k))
        if step.get("values_file"):
            expected, source = record.read_array(step["values_file"]), record.folder / step["values_file"]
            exact = step.get("device", "cpu") == str(self.device) == "cpu"
        elif noted is not None:
            expected, source, exact = noted.values, "the same step's first pass", True
        else:
            return
        if expected.shape != values.shape or not (
                np.array_equal(expected, values) if exact
                else np.allclose(expected, values, rtol=0, atol=ROWS_ATOL_ACROSS_DEVICES)):
            raise JobRecordError(
                f"step {k} of run {record.run_id}: the quantum block's inputs computed now differ from {source}; "
                "the model or the software changed since the job was submitted; start a new run with "
                "'qhybrid jobs submit'")

    def _apply(self, record: JobRecord, k: int) -> None:
        """Replay: the DDIM step with the job's expectation values; the latents go to disk."""
        step = record.steps[k]
        evs = record.read_array(step["result_file"])
        executor = _Executor(evs)
        z_next = self._denoiser_call(record, k, executor, full_step=True)
        call = self._only_call(executor, record, k)
        shape = (len(call.isa.observables), len(call.values))
        if evs.shape != shape:
            raise JobRecordError(f"{record.folder / step['result_file']} holds {evs.shape} values; expected {shape}")
        self._check_rows(record, k, call.values)
        step["latents_file"] = record.write_array(f"step_{k:04d}_latents.npy", z_next.cpu().numpy())
        step["status"] = "done"
        record.save()
        self._pubs.pop((record.run_id, k), None)

    # -- one step's job --------------------------------------------------------------------------
    def _submit(self, record: JobRecord, k: int) -> None:
        call = self._pub(record, k)
        step = record.steps[k]
        mode = self._mode_for_submission()
        seed = record.step_seed(k) if self.local else None
        tag = job_tag(record.run_id, k)
        # on disk before the call: if the process dies between the service accepting the job and
        # the id reaching the record, resume finds the job by its tag instead of paying twice
        previous = {"job_id": step.get("job_id"), "status": step.get("job_status"), "note": step.get("note")}
        values_file = record.write_array(f"step_{k:04d}_values.npy", call.values)
        step.update({"status": "submitting", "tag": tag, "submitting_at": _now(), "values_file": values_file,
                     "device": str(self.device), "bindings": int(len(call.values))})
        record.save()
        try:
            job = submit_pub(mode, record.options, self.local, call.isa, call.values, seed, tags=[tag],
                             backend_name=self.backend_name)
        except Exception as exc:  # noqa: BLE001 - network, plan or validation errors from the service
            raise RuntimeTargetError(
                f"submitting step {k} of run {record.run_id} failed ({one_line(exc, with_type=True, limit=300)}); "
                f"if the service accepted it anyway, 'qhybrid jobs resume {record.run_id}' finds it by its tag "
                f"{tag}") from None
        self.submitted += 1
        LIVE_JOBS[job.job_id()] = job
        if previous["job_id"]:  # a lost, failed or cancelled earlier attempt: keep its id
            step.setdefault("attempts", []).append(previous)
        step.update({"status": "submitted", "job_id": job.job_id(), "job_status": "SUBMITTED",
                     "submitted_at": _now(), "finished_at": None, "note": None, "mode": self._mode_used,
                     "mode_id": getattr(mode, "session_id", None), "simulator_seed": seed,
                     "program": record.program})
        if record.program == "executor":
            # the client-side post-processing fetch re-runs; and, offline, what the program holds
            cost = program_cost(job)
            step.update({"post_processor": post_processor(job), "program_circuits": cost.get("circuit_executions"),
                         "program_shots": cost.get("shots")})
        record.data["status"] = "running"
        record.save()

    def _find_tagged(self, record: JobRecord, k: int):
        """A step left 'submitting' by a crash: the job the service accepted under its tag, if any."""
        step = record.steps[k]
        if self.local:
            return None  # a local job died with its process
        with service_call(f"could not ask IBM Quantum whether step {k} of {record.run_id} was submitted", record,
                          "resume"):
            found = runtime_service().jobs(job_tags=[step["tag"]], limit=5)
        if not found:
            return None
        job = found[0]
        LIVE_JOBS[job.job_id()] = job
        step.update({"status": "submitted", "job_id": job.job_id(), "job_status": "SUBMITTED",
                     "submitted_at": step.get("submitting_at"), "note": "found by its tag after a crash"})
        record.save()
        self.log(f"note: step {k} of {record.run_id} had been submitted before a crash: job {job.job_id()}")
        return job

    def _retrieve(self, record: JobRecord, k: int):
        step = record.steps[k]
        job = LIVE_JOBS.get(step["job_id"])
        if job is not None:
            return job
        if self.local:
            step.update({"status": "pending", "job_status": "LOST",
                         "note": "a local testing-mode job ends with the process that submitted it; resubmitted"})
            record.save()
            self.log(f"note: step {k} of {record.run_id} was local job {step['job_id']}, which ended with its "
                     "process; it will be submitted again (local simulation is free)")
            return None
        with service_call(f"could not fetch job {step['job_id']} (step {k} of {record.run_id}) from IBM Quantum",
                          record):
            job = runtime_service().job(step["job_id"])
        LIVE_JOBS[step["job_id"]] = job
        return job

    def _status(self, job, record: JobRecord, k: int) -> str:
        with service_call(f"could not get the status of job {job.job_id()} (step {k} of {record.run_id})", record):
            status = job_status(job)
        step = record.steps[k]
        if step.get("job_status") != status:
            step["job_status"] = status
            record.save()
        return status

    def _collect(self, job, record: JobRecord, k: int) -> None:
        call = self._pub(record, k)  # the PUB's shape: the job's result must match it
        with service_call(f"could not read the result of job {job.job_id()} (step {k} of {record.run_id})", record):
            try:
                result = job.result()
            except Exception as exc:  # noqa: BLE001 - a post-processor this runtime does not have
                if record.program == "executor" and "post" in str(exc).lower() and "process" in str(exc).lower():
                    raise JobRecordError(self._post_processor_problem(record, k, exc)) from None
                raise
        evs = evs_table(result, len(call.isa.observables), len(call.values))
        step = record.steps[k]
        name = record.write_array(f"step_{k:04d}_evs.npy", evs)
        metadata = dict(result[0].metadata)
        if record.program == "executor":  # the local simulator's timings per circuit: not worth keeping
            metadata.pop("executor", None)
            metadata["shots"] = record.options.shots
        # local testing-mode jobs are not charged (the runtime reports 0 s for them): None, "not reported"
        seconds, usage_status = (None, None) if self.local else job_usage(job)
        step.update({"status": "result", "job_status": "DONE", "result_file": name, "finished_at": _now(),
                     "shots": metadata.get("shots"), "metadata": json.loads(json.dumps(metadata, default=str)),
                     "qpu_seconds": seconds, "qpu_usage_status": usage_status})
        record.save()

    def _post_processor_problem(self, record: JobRecord, k: int, exc: Exception) -> str:
        """Which runtime an executor job's result needs: fetching re-runs the client-side
        post-processor the job was prepared for, which the installed runtime may lack."""
        step = record.steps[k]
        wanted = (step.get("post_processor") or {}).get("version") or "unknown"
        versions = [p.get("versions", {}).get("qiskit-ibm-runtime") for p in record.data.get("provenance", [])]
        submitted_with = next((v for v in reversed(versions) if v), None)
        return (f"job {step['job_id']} (step {k} of {record.run_id}) needs the executor post-processor {wanted}, "
                f"which the installed qiskit-ibm-runtime {software_versions().get('qiskit-ibm-runtime')} cannot run "
                f"({one_line(exc, limit=200)}); install qiskit-ibm-runtime=={submitted_with or '<the version that submitted it>'} "
                "(the version that submitted it) and fetch again")

    def _fail(self, job, record: JobRecord, k: int, status: str) -> str:
        """Mark step k failed; returns the one line that says so and how to go on."""
        try:
            message = job.error_message() if hasattr(job, "error_message") else None
        except Exception:  # noqa: BLE001
            message = None
        step = record.steps[k]
        step.update({"status": "failed", "job_status": status, "finished_at": _now(),
                     "note": one_line(message, limit=300) if message else status})
        record.data["status"] = "failed"
        record.save()
        return (f"step {k} of {record.run_id} (job {job.job_id()}) ended {status}: {step['note']}; "
                f"'qhybrid jobs resume {record.run_id}' submits it again")

    # -- the loop -------------------------------------------------------------------------------
    def advance(self, how: Advance | None = None) -> None:
        """Move every run as far as ``how`` allows (default: submit and wait); records are saved
        after each change."""
        how = how or Advance()
        for record in self.records:
            self._lock(record)
        try:
            for record in self.records:
                self.load_circuit(record)
                self.note_provenance(record)
        except BaseException:
            self._unlock()
            raise
        total = sum(len(r.steps) for r in self.records)
        bar = tqdm(total=total, initial=sum(r.completed_steps() for r in self.records), unit="step",
                   desc=f"jobs on {self.backend_name}", disable=not self.progress)
        may_submit = how.submit
        failures: dict[str, QHybridError] = {}
        try:
            while True:
                waiting, moved = [], False
                for record in self.records:
                    k = record.next_step()
                    if k is None or record.run_id in failures:
                        continue
                    try:
                        outcome = self._step(record, k, may_submit)
                    except QHybridError as exc:  # this run stops; its siblings go on
                        failures[record.run_id] = exc
                        continue
                    if outcome.state == "failed":
                        failures[record.run_id] = RuntimeTargetError(outcome.message)
                    elif outcome.state in ("submitted", "waiting"):
                        waiting.append((record, k))
                    elif outcome.state == "done":
                        moved = True
                        bar.update(1)
                    if outcome.state in ("submitted", "done") and self.on_event is not None:
                        self.on_event(outcome.state, record, k)
                if waiting and how.wait:
                    self._wait(waiting, bar, failures)
                elif waiting and self.local:
                    # a local job lives in this process: finish and collect it, submit nothing more
                    self._wait(waiting, bar, failures)
                    may_submit = False
                elif not moved:
                    break
        except KeyboardInterrupt:
            self._finish(bar)
            waiting = [f"step {r.next_step()} of {r.run_id}" for r in self.records if r.next_step() is not None]
            raise Interrupted(
                f"stopped; the records are saved ({', '.join(waiting) or 'nothing'} not finished); submitted IBM "
                f"Quantum jobs keep running: 'qhybrid jobs fetch RUN_ID' collects them, 'qhybrid jobs resume "
                f"RUN_ID' continues") from None
        except BaseException:
            bar.close()
            self.close()
            self._unlock()
            raise  # the first error wins; the records hold every change made before it
        self._finish(bar)
        if failures:  # the errors themselves: their type (exit code) and parameter placeholders kept
            if len(self.records) == 1:
                raise next(iter(failures.values()))
            ok = [r.run_id for r in self.records if r.run_id not in failures]
            raise RuntimeTargetError(
                f"{len(failures)} of {len(self.records)} runs stopped: "
                + "; ".join(f"{run_id}: {exc.template}" for run_id, exc in failures.items())
                + (f" (the others went on: {', '.join(ok)})" if ok else ""))

    def _finish(self, bar) -> None:
        bar.close()
        self.close()
        try:
            for record in self.records:
                self._settle(record)
        finally:
            self._unlock()

    def _wait(self, waiting: list, bar, failures: dict) -> None:
        """Poll the jobs of ``waiting`` (run, step) until each has finished one way or another."""
        while True:
            states = []
            for record, k in waiting:
                if record.run_id in failures:
                    continue
                try:
                    job = self._retrieve(record, k)
                    if job is not None:  # (None: a lost local job, pending again)
                        states.append(self._status(job, record, k))
                except QHybridError as exc:
                    failures[record.run_id] = exc
            label = ", ".join(sorted(set(states)))
            if label != getattr(bar, "postfix", None):
                bar.set_postfix_str(label)
            if all(s in FINAL_STATES for s in states):  # (also when every run has failed)
                return
            time.sleep(self.poll)

    def _settle(self, record: JobRecord) -> None:
        """Final status, and the decoded images once every step is done."""
        if record.next_step() is None:
            if not record.data.get("images"):
                self._decode(record)
            record.data["status"] = "completed"
        elif any(s["status"] == "failed" for s in record.steps):
            record.data["status"] = "failed"
        elif any(s["status"] == "submitted" for s in record.steps):
            record.data["status"] = "waiting"
        else:
            record.data["status"] = "stopped"
        record.save()

    def _decode(self, record: JobRecord) -> None:
        from qhybrid.quantum.targets import noise_source
        from qhybrid.workflows.sampling import decode_images, write_samples

        images = decode_images(self.vae, record.latents_before(len(record.steps)))
        target = f"ibm:{self.backend_name}"
        info = {"run_id": record.run_id, "model": record.data["model"]["path"], "backend": self.backend_name,
                "n": len(images), "steps": len(record.steps), "sampler": "ddim", "eta": 0.0,
                "seed": record.data["sampling"]["seed"], "target": target, "noise_source": noise_source(target),
                "device": str(self.device),
                "options": record.data["options"], "job_ids": [s["job_id"] for s in record.steps],
                "vae_sha256": self.vae.checkpoint_header.get("weights_sha256"),
                "provenance": record.data.get("provenance"), "versions": software_versions()}
        out = write_samples(images, record.folder / "samples", info)
        record.data["images"] = {"dir": str(out.relative_to(record.path.parent)), "count": len(images),
                                 "decoded_at": _now()}
        self.log(f"run {record.run_id}: {len(images)} images in {out}/ (grid.png, sample_*.png)")


# --- what a run would cost on a QPU -------------------------------------------------------------
# IBM's baseline for the QPU time of a primitive job ("Workload usage" guide, "Estimate usage
# before submitting a job"): <per sub-job overhead> + (rep_delay + <circuit length>) x <circuit
# executions>, where circuit executions are the circuits after broadcasting times the shots. That
# is what qpu_estimate computes, term by term, from the ISA circuit a submission sends.
# The service's own figure is not available before submission: qiskit-ibm-runtime 0.51 offers
# RuntimeJobV2.usage_estimation (the service's "estimated_running_time_seconds"), which reads the
# estimate of a job that has been submitted already, and QiskitRuntimeService.usage(), which tells
# how much of the instance's allowance is used, not what a job will take. So no service estimate
# is asked for; after a run, each step's measured ``qpu_seconds`` sits beside this estimate.

#: QPU time every job costs besides its shots: IBM's guide gives about 2 s per sub-job (loading
#: the payload into the control electronics). Assumed: one sub-job per job (a PUB too large for
#: the execution engine is split, and each part costs this again).
JOB_OVERHEAD_SECONDS = 2.0
#: The repetition delay assumed when the backend reports none: the default of most IBM Quantum
#: backends (``backend.default_rep_delay``).
FALLBACK_REP_DELAY = 250e-6
#: Circuit, measurement and reset time per shot assumed when the backend's target has no
#: instruction durations: IBM's quick formula (2 s + 350 us per circuit execution) less the rep delay.
FALLBACK_SHOT_SECONDS = 100e-6
#: The Open Plan's allowance: 10 minutes of QPU time per rolling 28 days.
OPEN_PLAN_SECONDS = 600
#: Resilience level 2 runs every circuit at this many noise factors (zero-noise extrapolation with
#: the runtime's default factors 1, 3, 5): its runs' shot time is counted that many times, so that
#: --max-qpu-seconds cannot be passed by choosing level 2.
ZNE_NOISE_FACTORS = 3
ESTIMATE_FORMAT = "qhybrid-qpu-estimate"
ESTIMATE_INCLUDES = ("a fixed 2 s per job (assumed)",
                     ("per shot: the ISA circuit's duration from the backend's instruction durations, the "
                      "measurement, the qubit reset and the backend's repetition delay"),
                     ("executor path: the circuits and shots of the runtime's own pre-processing (twirling "
                      "randomisations, ZNE noise factors, TREX calibration circuits); legacy path: resilience "
                      f"level 2 at {ZNE_NOISE_FACTORS} noise factors"))
ESTIMATE_EXCLUDES = (("ZNE's folded circuits are longer than the circuit (each shot is counted at its length), "
                      "and on the legacy path TREX's readout-learning circuits"),
                     "a PUB too large for one sub-job is split, and each sub-job costs the fixed time again",
                     ("queueing, and in session mode the wall-clock time between jobs, which a session is "
                      "charged for (the Open Plan has no sessions: its runs use job mode)"))


def _rep_delay(backend) -> tuple[float, str]:
    """The backend's repetition delay between shots (seconds) and where it was read: the backend
    (``default_rep_delay``, as qiskit-ibm-runtime's backends forward it from their configuration),
    else its configuration, else :data:`FALLBACK_REP_DELAY`."""
    sources = [("backend", lambda: backend), ("configuration", backend.configuration)]
    for where, get in sources:
        for name in ("default_rep_delay", "rep_delay"):
            try:
                value = getattr(get(), name, None)
            except Exception:  # noqa: BLE001 - no configuration(), or a service call that failed
                value = None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                return float(value), f"{where}.{name}"
    return FALLBACK_REP_DELAY, f"assumed {FALLBACK_REP_DELAY * 1e6:.0f} us (the backend reports none)"


def _longest(target, name: str, qubits) -> float | None:
    """The longest duration of instruction ``name`` on ``qubits`` (they run in parallel), or None."""
    try:
        durations = [target[name][(q,)].duration for q in qubits]
    except Exception:  # noqa: BLE001 - no such instruction or qubit in the target
        return None
    return max(durations) if durations and None not in durations else None


def shot_seconds(isa: IsaCircuit, backend) -> dict:
    """The QPU time of one shot of the ISA circuit, term by term (seconds): the circuit's duration
    (:meth:`QuantumCircuit.estimate_duration`, the longest path through the backend's instruction
    durations), the measurement and the reset of its qubits (the Estimator measures the qubits of
    the observables and initialises the qubits before every shot) and the repetition delay."""
    target = backend.target
    layout = isa.circuit.layout
    qubits = list(layout.final_index_layout()) if layout is not None else list(range(isa.circuit.num_qubits))
    measured = sorted({q for o in isa.observables for p in o.paulis for q in np.flatnonzero(p.z | p.x)}) or qubits
    try:
        circuit = float(isa.circuit.estimate_duration(target, unit="s"))
    except Exception:  # noqa: BLE001 - a target without durations (QiskitError)
        circuit = None
    terms = {"circuit": circuit, "measurement": _longest(target, "measure", measured),
             "reset": _longest(target, "reset", qubits)}
    rep_delay, source = _rep_delay(backend)
    durations = "the backend's target"
    if None in terms.values():  # no durations to go by: IBM's typical figure for all three
        terms = {"circuit": FALLBACK_SHOT_SECONDS, "measurement": 0.0, "reset": 0.0}
        durations = f"assumed {FALLBACK_SHOT_SECONDS * 1e6:.0f} us (the backend's target has no durations)"
    terms["rep_delay"] = rep_delay
    return {**terms, "total": sum(terms.values()), "durations_from": durations, "rep_delay_from": source}


def qpu_estimate(runner: JobRunner, isa: IsaCircuit, records: list[JobRecord]) -> dict:
    """What the runs of one submit would cost on the backend's QPU (an estimate; see the notes
    above): jobs ("executions": one per step and run), bindings and shots per job and per image,
    and the estimated QPU seconds per job, run, image and in all. In local testing mode these are
    the figures of the device the fake backend copies, from its calibration snapshot."""
    first = records[0].data
    n, steps, shots = int(first["sampling"]["n"]), int(first["sampling"]["steps"]), int(first["options"]["shots"])
    runs = len(records)
    bindings = runner.bindings_per_job(n)
    bases = measurement_bases(isa.observables)
    per_shot = shot_seconds(isa, runner.estimator.backend)
    by_options: dict[str, tuple[int, int, str]] = {}  # runs that differ only in their seed cost the same
    for r in records:
        key = json.dumps(r.data["options"], sort_keys=True)
        if key not in by_options:
            by_options[key] = _job_shots(r.options, isa, bindings, bases)
    counted = [by_options[json.dumps(r.data["options"], sort_keys=True)] for r in records]
    circuits_per_job, shots_per_job, counted_by = counted[0]
    per_job = JOB_OVERHEAD_SECONDS + shots_per_job * per_shot["total"]
    per_run = [steps * (JOB_OVERHEAD_SECONDS + c[1] * per_shot["total"]) for c in counted]
    zne = [r for r in records if r.options.resilience_level == 2 or (r.options.setting or Mitigation()).uses_zne]
    return {
        "format": ESTIMATE_FORMAT, "format_version": 2, "created": _now(), "estimate": True,
        "model": first["model"]["path"], "backend": runner.backend_name, "local_testing_mode": runner.local,
        "mode": first["mode"]["requested"], "runs": runs,
        "seeds": list(dict.fromkeys(r.data["sampling"]["seed"] for r in records)),
        "resilience_levels": list(dict.fromkeys(r.data["options"]["resilience_level"] for r in records)),
        "program": records[0].program, "mitigation": records[0].options.describe(),
        "n": n, "steps": steps, "shots": shots,
        "executions": steps * runs, "executions_per_run": steps,
        "bindings_per_execution": bindings, "measurement_bases": bases,
        "circuits_per_execution": circuits_per_job, "shots_counted_by": counted_by,
        "shots_per_execution": shots_per_job, "shots_per_image": shots_per_job * steps / n,
        "seconds_per_shot": per_shot, "job_overhead_seconds": JOB_OVERHEAD_SECONDS,
        "qpu_seconds_per_execution": per_job, "qpu_seconds_per_run": per_job * steps,
        "qpu_seconds_per_image": per_job * steps / n, "qpu_seconds": sum(per_run),
        "zne_noise_factors": (len(Mitigation.of(zne[0].options.mitigation).noise_factors) if zne and zne[0].options.setting
                              else ZNE_NOISE_FACTORS) if zne else None,
        "includes": list(ESTIMATE_INCLUDES), "excludes": list(ESTIMATE_EXCLUDES),
    }


def _job_shots(options: RuntimeOptions, isa: IsaCircuit, bindings: int, bases: int) -> tuple[int, int, str]:
    """Circuits and shots one step's job sends, and how they were counted. The executor path
    asks the runtime's own pre-processing (:func:`qhybrid.quantum.mitigation.program_counts`:
    every twirling randomisation, ZNE factor and TREX calibration circuit); the legacy path
    prepares on the server, so there it is bindings x measurement bases x shots, times the noise
    factors at resilience level 2 or with ZNE."""
    if options.primitive == "executor":
        values = np.zeros((bindings, isa.circuit.num_parameters))
        counts = program_counts(options.replace(dd=False).executor_options(), isa.pub(values))
        return counts["circuit_executions"], counts["shots"], "the runtime's pre-processing (executor)"
    setting = options.setting
    factor = (len(setting.noise_factors) if setting is not None and setting.uses_zne
              else ZNE_NOISE_FACTORS if options.resilience_level == 2 else 1)
    return bindings * bases * factor, bindings * bases * options.shots * factor, (
        "bindings × bases × shots" + (f" × {factor} noise factors" if factor > 1 else "") + " (legacy EstimatorV2)")


def _check_limit(max_qpu_seconds) -> None:
    """A bad limit is refused before the model is loaded and the circuit transpiled."""
    if max_qpu_seconds is None:
        return
    if isinstance(max_qpu_seconds, bool) or not isinstance(max_qpu_seconds, (int, float)) or not max_qpu_seconds > 0:
        raise InputError(f"{param('max_qpu_seconds')} must be a positive number of seconds, got {max_qpu_seconds!r}")


def check_qpu_budget(estimate: dict, max_qpu_seconds: float | None) -> None:
    """Refuse runs whose estimated QPU time exceeds ``max_qpu_seconds`` (one line, before anything
    is submitted or written): a budget guard, since a started run that stops half way has spent
    its QPU time on no image."""
    if max_qpu_seconds is None or estimate["qpu_seconds"] <= max_qpu_seconds:
        return
    runs = estimate["runs"]
    what = f"{estimate['executions']} jobs × {estimate['qpu_seconds_per_execution']:.1f} s" + (
        f" over {runs} runs" if runs > 1 else "") + (
        f"; ZNE counted at {estimate['zne_noise_factors']} noise factors"
        if estimate.get("zne_noise_factors") else "")
    fewer = f"{param('n')}, {param('steps')} or {param('shots')}" + (
        f" (or use fewer {param('seeds')} or {param('resilience_levels')})" if runs > 1 else "")
    raise InputError(f"the estimated QPU time, {estimate['qpu_seconds']:.1f} s ({what}), exceeds "
                     f"{param('max_qpu_seconds')} {max_qpu_seconds:g} s; nothing was submitted or written; lower "
                     f"{fewer}, or raise the limit (the Open Plan allows {OPEN_PLAN_SECONDS} s per 28 days)")


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def estimate_lines(estimate: dict) -> list[str]:
    """The estimate as a person reads it: the counts, the terms and what is left out."""
    e, t = estimate, estimate["seconds_per_shot"]
    per_chain = e["bindings_per_execution"] / e["n"]
    runs = e["runs"]
    several = e["measurement_bases"] > 1
    bases = f", {e['measurement_bases']} measurement bases" if several else ""
    local = (" (local testing mode: nothing is charged; the figures are for the device it copies)"
             if e["local_testing_mode"] else "")
    return [
        f"QPU cost estimate for {e['model']} on {e['backend']}{local}: an ESTIMATE, nothing was submitted",
        f"executions {e['executions']} jobs ({e['steps']} steps × {runs} run{'s' if runs > 1 else ''}), one PUB each",
        f"bindings   {e['bindings_per_execution']} per execution ({e['n']} chains × {per_chain:g} circuit evaluations)"
        + bases,
        f"mitigation {e.get('mitigation', '?')} on the {e.get('program', 'estimator')} program",
        (f"shots      {e['shots_per_execution']:,} per execution in {e.get('circuits_per_execution', '?'):,} circuits "
         f"({e['shots']:,} per binding{' and basis' if several else ''}; counted by "
         f"{e.get('shots_counted_by', 'bindings × bases × shots')}); {e['shots_per_image']:,.0f} per image"),
        (f"per shot   {_us(t['total'])} = circuit {_us(t['circuit'])} + measurement {_us(t['measurement'])} + reset "
         f"{_us(t['reset'])} + repetition delay {_us(t['rep_delay'])} (durations: {t['durations_from']}; "
         f"delay: {t['rep_delay_from']})"),
        f"QPU time   {e['qpu_seconds_per_execution']:.1f} s per execution ({e['job_overhead_seconds']:g} s per job + "
        f"{e['shots_per_execution']:,} shots × {_us(t['total'])}); {e['qpu_seconds_per_image']:.1f} s per image; "
        f"{e['qpu_seconds_per_run']:.1f} s per run"
        + (f" (ZNE: {e['zne_noise_factors']} noise factors counted)" if e.get("zne_noise_factors") else "")
        + (f"; {e['qpu_seconds']:.1f} s for the {runs} runs" if runs > 1 or e.get("zne_noise_factors") else "")
        + f" (the Open Plan allows {OPEN_PLAN_SECONDS} s per 28 days)",
        f"includes   {'; '.join(e['includes'])}",
        f"excludes   {'; '.join(e['excludes'])}",
    ]


def write_estimate(estimate: dict, jobs_dir: str | Path = DEFAULT_JOBS_DIR) -> Path:
    """Save a dry run's estimate as ``<jobs_dir>/dry-runs/<time>-<model>-<backend>.json``: beside the
    records, but not one of them (``jobs list`` reads only ``<jobs_dir>/*.json``)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(estimate["model"]).name)
    path = Path(jobs_dir) / "dry-runs" / f"{stamp}-{name}-{estimate['backend']}-{secrets.token_hex(2)}.json"
    io.write_json(path, estimate)
    return path


# --- entry points -------------------------------------------------------------------------------
def submit(model: str | Path, backend: str, n: int = 16, steps: int = 20, seeds=(0,), resilience_levels=(None,),
           shots: int = 1024, twirling: bool = False, dd: bool = False, mode: str | None = None,
           optimization_level: int = 2, seed_transpiler: int = 0, jobs_dir: str | Path = DEFAULT_JOBS_DIR,
           wait: bool = True, progress: bool = True, poll: float | None = None, log=print,
           on_event: EventHook | None = None, vae: str | Path | None = None,
           max_qpu_seconds: float | None = None, mitigation=None, primitive: str = "executor",
           device=None) -> list[JobRecord]:
    """Create one record per (seed, resilience level) and run them (see the module docstring).
    ``vae``: the VAE folder, when it is not where the model's checkpoint says (recorded).
    ``max_qpu_seconds``: refuse, before anything is written or submitted, runs whose estimated QPU
    time (:func:`qpu_estimate`, recorded as each record's ``estimate``) exceeds it. ``device``:
    where the denoiser's layers and the VAE run (None: the CPU)."""
    _check_limit(max_qpu_seconds)
    device = resolve_device(device or "cpu")
    records, runner, isa = _plan(model, backend, n, steps, seeds, resilience_levels, shots, twirling, dd, mode,
                                 optimization_level, seed_transpiler, jobs_dir, progress, poll, log, on_event, vae,
                                 mitigation, primitive, device)
    cost = qpu_estimate(runner, isa, records)
    check_qpu_budget(cost, max_qpu_seconds)
    log(f"QPU estimate: {cost['qpu_seconds']:.1f} s for {len(records)} run{'s' if len(records) > 1 else ''} "
        f"({cost['executions']} jobs × {cost['qpu_seconds_per_execution']:.1f} s; an estimate: 'qhybrid jobs "
        "submit --dry-run' shows its terms)")
    latent_shape = (runner.model.cfg.latent_channels, runner.model.cfg.latent_size, runner.model.cfg.latent_size)
    try:
        for record in records:
            runner._lock(record)  # before the first save: a "created" record always has its process
            for step, t in zip(record.steps, runner.timesteps):
                step["timestep"] = int(t)
            gen = torch.Generator().manual_seed(int(record.data["sampling"]["seed"]))
            record.write_array("initial_latents.npy", torch.randn((n, *latent_shape), generator=gen).numpy())
            record.data["initial_latents_sha256"] = _sha256((record.folder / "initial_latents.npy").read_bytes())
            runner.write_circuit(record, isa)
            record.data["circuit"]["spec"] = runner.model.quantum_block.spec.to_dict()
            record.data["estimate"] = cost
            seal(record.data)
            runner.note_provenance(record)
            record.save()
            log(f"run {record.run_id}: record {record.path}")
    except BaseException:
        runner._unlock()
        raise
    if records[0].data["ignored_locally"]:
        log(f"note: local testing mode ignores {', '.join(records[0].data['ignored_locally'])} (recorded; "
            "IBM Quantum applies them)")
    runner.advance(Advance(submit=True, wait=wait))
    return records


def estimate(model: str | Path, backend: str, n: int = 16, steps: int = 20, seeds=(0,), resilience_levels=(None,),
             shots: int = 1024, twirling: bool = False, dd: bool = False, mode: str | None = None,
             optimization_level: int = 2, seed_transpiler: int = 0, vae: str | Path | None = None,
             max_qpu_seconds: float | None = None, mitigation=None, primitive: str = "executor",
             device=None) -> dict:
    """The dry run of :func:`submit` with the same arguments: what its runs would cost on a QPU
    (:func:`qpu_estimate`), found as submit finds it (the same checks, model, transpilation and
    note pass), with no record written and nothing submitted. A ``fake_*`` backend needs no
    account; an ``ibm_*`` one needs the service for the backend's durations (no account: the
    usual one-line error). ``max_qpu_seconds`` refuses as submit would; ``device`` as submit's."""
    _check_limit(max_qpu_seconds)
    device = resolve_device(device or "cpu")
    records, runner, isa = _plan(model, backend, n, steps, seeds, resilience_levels, shots, twirling, dd, mode,
                                 optimization_level, seed_transpiler, DEFAULT_JOBS_DIR, False, None, print, None, vae,
                                 mitigation, primitive, device)
    cost = qpu_estimate(runner, isa, records)
    check_qpu_budget(cost, max_qpu_seconds)
    return cost


def _plan(model, backend: str, n: int, steps: int, seeds, resilience_levels, shots: int, twirling: bool, dd: bool,
          mode: str | None, optimization_level: int, seed_transpiler: int, jobs_dir, progress: bool,
          poll: float | None, log, on_event: EventHook | None, vae, mitigation=None,
          primitive: str = "executor", device=None) -> tuple[list[JobRecord], JobRunner, IsaCircuit]:
    """The records (in memory, unwritten) a submit would create, the runner that loaded the model
    and the transpiled ISA circuit: every check of the arguments happens here, before anything is
    written, so that submit and its dry run refuse the same things the same way."""
    for name, value in (("n", n), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{param(name)} must be a positive integer, got {value!r}")
    seeds, levels = list(seeds), list(resilience_levels)
    if not seeds or not levels:
        raise InputError(f"give at least one seed ({param('seeds')}) and one resilience level "
                         f"({param('resilience_levels')})")
    if mode is None:
        mode = "batch" if len(seeds) * len(levels) > 1 else "session"
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    setting = None if mitigation is None else Mitigation.of(mitigation).to_dict()
    if setting is not None and levels != [None]:
        raise InputError(f"give {param('mitigation')} or {param('resilience_levels')}, not both (a mitigation sets "
                         "resilience level 0 plus exactly its technique)")
    options = [RuntimeOptions(shots=shots, resilience_level=level, twirling=twirling, dd=dd,
                              optimization_level=optimization_level, seed_transpiler=seed_transpiler,
                              primitive=primitive, mitigation=setting)
               for level in levels]
    if is_local(backend):
        from qhybrid.quantum.primitives.aer import fake_backend

        fake_backend(backend)  # an unknown name fails here, listing the valid ones
    model = Path(model)
    header = ckpt.read_header(model, "ldm")
    total_steps = header["config"]["scheduler"].get("num_train_timesteps", 1000)
    if steps > total_steps:
        raise InputError(f"{param('steps')} must be at most {total_steps} (the model's training timesteps), "
                         f"got {steps}")
    jobs_dir = Path(jobs_dir)
    records = []
    group: dict = {"id": None, "runs": []}  # the runs of this call: one id, filled in below
    for seed, opts in itertools.product(seeds, options):
        run_id = _new_run_id(model, backend, seed, opts.resilience_level, opts.setting)
        group["runs"].append(run_id)
        data = {
            "format": RECORD_FORMAT, "format_version": RECORD_VERSION, "run_id": run_id,
            "status": "created", "created": _now(), "updated": _now(),
            "backend": {"name": backend, "local_testing_mode": is_local(backend)},
            "mode": {"requested": mode, "used": None, "id": None, "note": None},
            "options": opts.to_dict(),
            "runtime": {"program": PROGRAM_IDS[opts.primitive], "mitigation": opts.describe()},
            "ignored_locally": opts.ignored_locally() if is_local(backend) else [],
            "sampling": {"n": n, "steps": steps, "seed": seed, "sampler": "ddim", "eta": 0.0},
            "model": {"path": str(model.resolve()), "sha256": header.get("weights_sha256"),
                      "kind": header["config"]["denoiser"].get("kind"),
                      **({"vae": str(Path(vae).resolve())} if vae is not None else {})},
            "circuit": {}, "initial_latents": "initial_latents.npy", "images": None, "group": group,
            "steps": [{"index": k, "timestep": None, "status": "pending", "job_id": None} for k in range(steps)],
        }
        records.append(JobRecord(jobs_dir / f"{run_id}.json", data))
    group["id"] = f"{records[0].run_id[:15]}-{secrets.token_hex(3)}"  # the first run's time stamp
    # the runner loads the model and transpiles: a classical model, an unknown backend or a
    # circuit wider than the backend fails here, before anything is written
    runner = JobRunner(records, progress, poll, log, on_event, device=device)
    return records, runner, runner.estimator.isa(runner.logical, runner.observables)


def resume(run_id: str, jobs_dir: str | Path = DEFAULT_JOBS_DIR, wait: bool = True, progress: bool = True,
           poll: float | None = None, log=print, on_event: EventHook | None = None, device=None) -> JobRecord:
    """Continue a run from its last completed step (finished job results are reused), the
    denoiser's layers and the VAE on ``device`` (None: the CPU; any device, whatever the run began on)."""
    device = resolve_device(device or "cpu")
    record = JobRecord.load(jobs_dir, run_id)
    if record.next_step() is None and record.data.get("images"):
        log(f"run {run_id} is already complete: {record.folder / 'samples'}/")
        return record
    runner = _runner_for(record, "resume", progress, poll, log, on_event, device=device)
    runner.advance(Advance(submit=True, wait=wait))
    return record


def _runner_for(record: JobRecord, command: str, *args, **kwargs) -> JobRunner:
    """A runner for an existing record; a connection failure says the record is untouched."""
    try:
        return JobRunner([record], *args, **kwargs)
    except RuntimeTargetError as exc:
        raise RuntimeTargetError(f"{exc.template}; the record is unchanged; retry with 'qhybrid jobs {command} "
                                 f"{record.run_id}'") from None


def fetch(run_id: str, jobs_dir: str | Path = DEFAULT_JOBS_DIR, progress: bool = True, log=print,
          on_event: EventHook | None = None, device=None) -> JobRecord:
    """Collect finished results from the service and apply them; decode when every step is done.
    Submits nothing. ``device``: as :func:`resume`'s."""
    device = resolve_device(device or "cpu")
    record = JobRecord.load(jobs_dir, run_id)
    runner = _runner_for(record, "fetch", progress, None, log, on_event, device=device)
    runner.advance(Advance(submit=False, wait=False))
    return record


def cancel(run_id: str, jobs_dir: str | Path = DEFAULT_JOBS_DIR, log=print) -> JobRecord:
    """Cancel a run's submitted, unfinished job on the service and mark the run "cancelled"; its
    step becomes ``failed`` (job status CANCELLED), so ``resume`` may continue later by submitting
    that step again. A job that already finished is left for ``fetch``/``resume`` to collect (its
    result is paid for). A local testing-mode job can only be cancelled from the process that
    submitted it (elsewhere it ended with its process: nothing to cancel). A completed run has
    nothing to cancel: that is said, and is no error (exit 0), so a script may cancel what it
    started without checking first."""
    record = JobRecord.load(jobs_dir, run_id)
    if record.next_step() is None:
        log(f"run {run_id} is complete: nothing to cancel")
        return record
    handle = hold_lock(record, "stop it with Ctrl-C (its submitted jobs keep running), then cancel again")
    try:
        record = JobRecord.load(jobs_dir, run_id)  # as it stands now that no other process may change it
        local = record.data["backend"]["local_testing_mode"]
        cancelled = []
        for step in record.steps:
            if step["status"] not in ("submitted", "submitting"):
                continue
            job = _job_to_cancel(record, step, local, log)
            if job is not None and _cancel_job(job, record, step, local, log):
                cancelled.append(step["job_id"])
        record.data["status"] = "cancelled"
        record.save()
    finally:
        handle.close()
    what = f"cancelled job {', '.join(cancelled)}" if cancelled else "no job was cancelled"
    log(f"run {run_id}: {what}; the run is marked cancelled; 'qhybrid jobs resume {run_id}' continues it")
    return record


def _job_to_cancel(record: JobRecord, step: dict, local: bool, log):
    """The job of a 'submitted' (or crash-interrupted 'submitting') step, or None if there is no
    job left to cancel."""
    k = step["index"]
    if local:
        job = LIVE_JOBS.get(step.get("job_id")) if step["status"] == "submitted" else None
        if job is None:
            log(f"step {k} of {record.run_id}: its local testing-mode job ended with the process that submitted "
                "it; nothing to cancel")
        return job
    with service_call(f"could not find the job of step {k} of {record.run_id} on IBM Quantum", record, "cancel"):
        if step["status"] == "submitted":
            return LIVE_JOBS.get(step["job_id"]) or runtime_service().job(step["job_id"])
        found = runtime_service().jobs(job_tags=[step["tag"]], limit=5)
    if not found:
        log(f"step {k} of {record.run_id}: no job reached IBM Quantum (none carries tag {step['tag']}); "
            "nothing to cancel")
        return None
    step.update({"job_id": found[0].job_id(), "note": "found by its tag after a crash"})
    return found[0]


def _cancel_job(job, record: JobRecord, step: dict, local: bool, log) -> bool:
    """Cancel one step's job (the record's ``job_id``) and record it; False if it had already ended."""
    k, job_id = step["index"], step["job_id"]
    with service_call(f"could not get the status of job {job_id} (step {k} of {record.run_id})", record, "cancel"):
        status = job_status(job)
    if status in FINAL_STATES:
        log(f"step {k} of {record.run_id}: job {job_id} already ended {status}; nothing to cancel"
            + ("; 'qhybrid jobs fetch' collects its result" if status == "DONE" else ""))
        return False
    with service_call(f"could not cancel job {job_id} (step {k} of {record.run_id})", record, "cancel"):
        job.cancel()
    note = "cancelled with 'qhybrid jobs cancel'"
    if local and job_status(job) != "CANCELLED":
        note += "; the local simulator had started it and runs it to the end, but its result is not used"
    step.update({"status": "failed", "job_status": "CANCELLED", "finished_at": _now(),
                 "note": note})
    record.save()
    log(f"step {k} of {record.run_id}: job {job_id} cancelled")
    return True


def _cost_line(record: JobRecord) -> str | None:
    """Executions, bindings per execution, shots per image and seconds per step, from the steps so far."""
    d = record.data
    bindings = [s["bindings"] for s in record.steps if s.get("bindings")]
    if not bindings:
        return None
    chains, steps = int(d["sampling"]["n"]), len(record.steps)
    per_chain = bindings[0] / chains
    shots = d["options"]["shots"]
    seconds = []
    for s in record.steps:
        if s.get("submitted_at") and s.get("finished_at"):
            with suppress(ValueError, TypeError):
                seconds.append((dt.datetime.fromisoformat(s["finished_at"])
                                - dt.datetime.fromisoformat(s["submitted_at"])).total_seconds())
    program_shots = [s["program_shots"] for s in record.steps if s.get("program_shots")]
    if program_shots:  # the executor's program: randomisations, noise factors, calibration circuits counted
        per_image = f"{program_shots[0] * steps / chains:,.0f} shots per image (as the executor program sends them)"
    else:
        per_image = f"{shots * per_chain * steps:,.0f} shots per image"
    return (f"cost       {steps} executions (one PUB per step) of {bindings[0]} bindings ({chains} chains × "
            f"{per_chain:g} circuit evaluations each); {per_image}"
            + (f"; {sum(seconds) / len(seconds):.1f} s per step (submitted to finished)" if seconds else ""))


def _usage_line(record: JobRecord) -> str:
    """The QPU time the service charged for the collected jobs (from each step's ``qpu_seconds``)."""
    if record.data["backend"]["local_testing_mode"]:
        return "QPU usage  not reported (local testing mode)"
    collected = [s for s in record.steps if "qpu_seconds" in s and s["status"] in ("result", "done")]
    if not collected:
        return "QPU usage  no job collected yet" if record.completed_steps() == 0 else "QPU usage  not recorded"
    reported = [s for s in collected if s["qpu_seconds"] is not None]
    if not reported:
        return f"QPU usage  not reported by the service for the {len(collected)} jobs collected"
    pending = sum(s.get("qpu_usage_status") == "pending" for s in reported)
    missing = len(collected) - len(reported)
    estimate = record.data.get("estimate") or {}
    per_job = estimate.get("qpu_seconds_per_execution")
    measured = sum(s["qpu_seconds"] for s in reported)
    return (f"QPU usage  {measured:.1f} s over {len(reported)} jobs"
            + (f" ({pending} still being computed when collected)" if pending else "")
            + (f"; not reported for {missing} jobs" if missing else "")
            + (f"; estimated {per_job * len(reported):.1f} s for those jobs (measured/estimated "
               f"{measured / (per_job * len(reported)):.2f})" if per_job else ""))


def _estimate_line(record: JobRecord) -> str | None:
    """The QPU time estimated at submission (:func:`qpu_estimate`), for comparison with the usage."""
    e = record.data.get("estimate")
    if not isinstance(e, dict) or not e.get("qpu_seconds_per_execution"):
        return None  # submitted before qhybrid estimated runs
    return (f"estimate   {e['qpu_seconds_per_run']:.1f} s QPU time for the run ({len(record.steps)} jobs × "
            f"{e['qpu_seconds_per_execution']:.1f} s: {e['job_overhead_seconds']:g} s per job + "
            f"{e['shots_per_execution']:,} shots × {_us(e['seconds_per_shot']['total'])}; "
            "an estimate made at submission)")


def _provenance_lines(record: JobRecord) -> list[str]:
    """The software versions, backend calibration and device (of the networks) each process ran the
    steps with."""
    entries = record.data.get("provenance") or []
    if not entries:
        return ["software   not recorded (the record was written before qhybrid recorded it)"]
    lines = []
    for k, entry in enumerate(entries):
        versions = ", ".join(f"{name} {version or '-'}" for name, version in (entry.get("versions") or {}).items())
        label = "software  " if k == 0 else "          "
        lines.append(f"{label} {versions}; backend calibrated {entry.get('calibration_date') or 'unknown'}"
                     + (f"; networks on {entry['device']}" if entry.get("device") else "")
                     + ("" if k == 0 else f" (from {entry.get('since')})"))
    return lines


def _runtime_line(record: JobRecord) -> str:
    """The program the run's jobs run as, its mitigation and the client-side post-processor."""
    options = record.options
    versions = sorted({(s.get("post_processor") or {}).get("version") for s in record.steps} - {None})
    if record.program == "executor":
        where = "executor-based Estimator (program 'executor')"
    else:
        where = "legacy server-side EstimatorV2 (program 'estimator')"
    return (f"runtime    {where}; mitigation: {options.describe()}"
            + (f"; post-processor {', '.join(versions)}" if versions else ""))


def status_lines(record: JobRecord) -> list[str]:
    """A readable summary of a record (no service calls)."""
    d = record.data
    opts = d["options"]
    level = ("0 (set by the mitigation)" if opts.get("mitigation") else
             "service default" if opts["resilience_level"] is None else opts["resilience_level"])
    status, note = effective_status(record.path, d)
    group = d.get("group") or {}
    lines = [
        f"run        {record.run_id}  [{status}]" + (f" ({note})" if note else ""),
        f"backend    {d['backend']['name']}{' (local testing mode)' if d['backend']['local_testing_mode'] else ''}",
        f"mode       requested {d['mode']['requested']}, used {d['mode']['used'] or '-'}"
        + (f" ({d['mode']['note']})" if d["mode"].get("note") else ""),
        f"options    shots {opts['shots']}, resilience level {level}, twirling {opts['twirling']}, "
        f"dd {opts['dd']}, optimisation level {opts['optimization_level']}"
        + (f"; ignored locally: {', '.join(d['ignored_locally'])}" if d.get("ignored_locally") else ""),
        _runtime_line(record),
        f"sampling   {d['sampling']['n']} chains, {d['sampling']['steps']} DDIM steps, seed {d['sampling']['seed']}",
        f"model      {d['model']['path']} (sha256 {str(d['model']['sha256'])[:12]})",
        (f"circuit    {d['circuit'].get('num_qubits')} qubits, depth {d['circuit'].get('depth')}, "
         f"{d['circuit'].get('two_qubit_gates')} two-qubit gates on physical qubits "
         f"{d['circuit'].get('physical_qubits')} ({record.folder.name}/circuit.qasm3)"),
        *_provenance_lines(record),
        f"progress   {record.completed_steps()}/{len(record.steps)} steps done",
    ]
    if group.get("id"):
        lines.insert(1, f"group      {group['id']} ({len(group.get('runs') or [])} runs submitted together)")
    cost = _cost_line(record)
    if cost:
        lines.insert(-1, cost)
    estimate = _estimate_line(record)
    if estimate:
        lines.insert(-1, estimate)
    lines.insert(-1, _usage_line(record))
    if d.get("images"):
        lines.append(f"images     {d['images']['count']} in {record.path.parent / d['images']['dir']}/")
    lines.append(f"{'step':>4}  {'t':>4}  {'status':<9}  {'job status':<10}  {'job id':<38}  finished")
    for s in record.steps:
        lines.append(f"{s['index']:>4}  {s.get('timestep')!s:>4}  {s['status']:<9}  {s.get('job_status') or '-'!s:<10}  "
                     f"{s.get('job_id') or '-'!s:<38}  {s.get('finished_at') or '-'}")
    return lines
