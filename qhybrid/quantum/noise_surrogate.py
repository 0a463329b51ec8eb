"""A differentiable stand-in for a backend's noise on the quantum block's outputs, for training.

Noise-aware training (``train diffusion --noise-aware fake:<backend>``) cannot run Aer inside
every optimiser step: one sampling step on ``fake:`` takes seconds, a training step tens of
milliseconds. What it needs is what the noise *does* to the block's outputs, in a form autograd
can pass through. Measured on the demo's hybrid block (6 qubits, 15 two-qubit gates after
transpiling), the device noise is mostly an affine map of the exact outputs ``mu``:

    y = A @ mu + b + e,     e ~ N(0, (1 - y^2) / shots + s^2)

* ``A`` (outputs x outputs): attenuation on the diagonal (depolarising gate errors and readout
  both shrink every <Z> towards 0; 0.87-0.97 on fake_torino, fake_fez and fake_kyiv), with the
  off-diagonal entries for crosstalk between outputs;
* ``b``: the offsets (asymmetric readout: P(0|1) != P(1|0));
* the shot noise of ``shots`` measurements, exactly the binomial variance of a <Z> estimate;
* ``s``: per output, the spread of what the affine map does not explain (coherent, input-dependent
  errors), fitted from the residuals and drawn as noise, so the surrogate errs on the side of more
  noise, not less.

:func:`fit_surrogate` fits ``A``, ``b`` and ``s`` by least squares from real noisy executions of the
block's ISA circuit on the ``fake:`` target (:class:`~qhybrid.quantum.primitives.aer.NoisyEstimator`,
counts with the device's readout), on the block's own inputs at its current weights and at
perturbed and random weights (training moves the weights, and the fit should hold there too). It
then measures the fit on held-out inputs against fresh Aer runs: ``error_over_floor`` is the mean
|Aer - surrogate| over the shot-noise floor at the training shot count (1 means the surrogate is
within shot noise; the ideal outputs' own ratio is reported beside it). The surrogate, its
backend, calibration date, software versions and fit quality are one JSON file: saved next to the
checkpoint it trained (``noise_surrogate.json``), or by ``qhybrid noise surrogate`` as
``<model>-<backend>-surrogate.json`` in its ``--out`` folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qhybrid import io
from qhybrid.errors import InputError

FORMAT = "qhybrid-noise-surrogate"
FORMAT_VERSION = 1
#: File name next to a noise-aware checkpoint.
FILE_NAME = "noise_surrogate.json"
#: Shots of the executions the fit uses: enough that their own sampling error (0.004 per <Z>) is
#: small beside the effects fitted, few enough that a fit takes seconds.
FIT_SHOTS = 16384
#: Spread (radians) of the perturbations added to the block's weights for part of the fit rows.
WEIGHT_JITTER = 0.5


class SurrogateError(InputError):
    """A surrogate file that cannot be used with this model or target (a ValueError)."""


class NoiseSurrogate(nn.Module):
    """``mu -> A mu + b + noise`` (module docstring): in training mode one noisy draw, in eval mode
    the exact outputs unchanged.

    Noise-aware training (``LatentDenoiser.forward_pair``) predicts each batch with the exact block
    outputs and with the same outputs through this module. It is never part of a model: it lives in
    its own JSON file.
    """

    def __init__(self, matrix, offset, residual_sd, *, shots: int, info: dict | None = None):
        super().__init__()
        matrix = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
        n = matrix.shape[0]
        if matrix.shape != (n, n) or len(offset) != n or len(residual_sd) != n:
            raise SurrogateError(f"a noise surrogate needs a square matrix and one offset and spread per output; "
                                 f"got {tuple(matrix.shape)}, {len(offset)}, {len(residual_sd)}")
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
            raise SurrogateError(f"a noise surrogate's shots must be a positive integer, got {shots!r}")
        self.register_buffer("matrix", matrix.float(), persistent=False)
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset, dtype=np.float64)).float(), persistent=False)
        self.register_buffer("residual_sd", torch.as_tensor(np.asarray(residual_sd, dtype=np.float64)).float(),
                             persistent=False)
        self.shots = int(shots)
        self.info = dict(info or {})

    @property
    def num_outputs(self) -> int:
        return self.matrix.shape[0]

    def mean(self, mu: torch.Tensor) -> torch.Tensor:
        """The noisy expectation values the surrogate predicts for exact outputs ``mu``."""
        return (mu @ self.matrix.to(mu.dtype).T + self.offset.to(mu.dtype)).clamp(-1, 1)

    def sample(self, mu: torch.Tensor) -> torch.Tensor:
        """One noisy draw (reparameterised: gradients flow through the mean and the spread)."""
        y = self.mean(mu)
        var = (1 - y * y).clamp_min(0) / self.shots + self.residual_sd.to(mu.dtype) ** 2
        return (y + torch.sqrt(var + 1e-12) * torch.randn_like(y)).clamp(-1, 1)

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.sample(mu) if self.training else mu

    def for_shots(self, shots: int) -> "NoiseSurrogate":
        """The same fit, drawing the shot noise of another shot count."""
        return NoiseSurrogate(self.matrix.cpu(), self.offset.cpu(), self.residual_sd.cpu(), shots=shots, info=self.info)

    # -- the file --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.info,
                "shots": self.shots,
                "matrix": self.matrix.double().tolist(), "offset": self.offset.double().tolist(),
                "residual_sd": self.residual_sd.double().tolist()}

    def save(self, path: str | Path) -> Path:
        return io.write_json(path, self.to_dict())

    @classmethod
    def from_file(cls, path: str | Path) -> "NoiseSurrogate":
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SurrogateError(f"no noise surrogate at {path}; fit one with 'qhybrid noise surrogate'") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SurrogateError(f"{path} is not a noise surrogate (not JSON); fit a new one with "
                                 "'qhybrid noise surrogate'") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SurrogateError(f"{path} is not a noise surrogate (format {data.get('format') if isinstance(data, dict) else None!r}); "
                                 "fit one with 'qhybrid noise surrogate'")
        if data.get("format_version") != FORMAT_VERSION:
            raise SurrogateError(f"{path} is a noise surrogate of format {data.get('format_version')!r}; this qhybrid "
                                 f"reads format {FORMAT_VERSION}: fit it again with 'qhybrid noise surrogate'")
        info = {k: v for k, v in data.items()
                if k not in ("format", "format_version", "shots", "matrix", "offset", "residual_sd")}
        try:
            return cls(data["matrix"], data["offset"], data["residual_sd"], shots=data["shots"], info=info)
        except SurrogateError as exc:
            raise SurrogateError(f"{path} is damaged: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise SurrogateError(f"{path} is damaged ({type(exc).__name__}: {exc}); fit it again with "
                                 "'qhybrid noise surrogate'") from None

    @property
    def backend(self) -> str | None:
        return self.info.get("backend")

    def check_fits(self, spec_dict: dict, target: str | None = None) -> None:
        """Refuse a surrogate fitted for another circuit or (with ``target``) another backend."""
        if self.info.get("circuit") != spec_dict:
            raise SurrogateError(f"this noise surrogate was fitted for another circuit ({self.info.get('circuit')}); "
                                 "fit one for this model with 'qhybrid noise surrogate'")
        if target is not None and f"fake:{self.backend}" != target:
            raise SurrogateError(f"this noise surrogate is of {self.backend}, not {target}; "
                                 f"use --noise-aware fake:{self.backend} or fit one for {target}")

    def extra_repr(self) -> str:
        return f"backend={self.backend}, shots={self.shots}"


# --- the fit ----------------------------------------------------------------------------------
def fit_surrogate(block, backend: str, inputs: torch.Tensor | np.ndarray, *, shots: int = 4096,
                  fit_rows: int = 512, held_out_rows: int = 256, fit_shots: int = FIT_SHOTS, seed: int = 0,
                  optimization_level: int = 2, log=None) -> NoiseSurrogate:
    """Fit the surrogate of ``fake:<backend>`` for ``block`` (a :class:`~qhybrid.quantum.QuantumBlock`).

    ``inputs``: block inputs (rows of angles) of the kind the model feeds it; fit and held-out rows
    are drawn from them without overlap when there are enough. The fit rows are split in four
    weight sets: the block's weights, two perturbations of them (``WEIGHT_JITTER``) and one
    uniformly random draw; the held-out rows use the block's own weights. ``shots`` is the shot
    count the model will be trained (and run) for.
    """
    from qhybrid.quantum.analysis import shot_noise_floor
    from qhybrid.quantum.targets import noise_source, parse_target, qnn_pub_circuit
    from qhybrid.versions import software_versions

    x = np.asarray(inputs.detach().cpu().double() if isinstance(inputs, torch.Tensor) else inputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != block.spec.num_inputs or len(x) < 8:
        raise SurrogateError(f"fitting a noise surrogate needs at least 8 input rows of {block.spec.num_inputs} angles, "
                             f"got shape {x.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    need = fit_rows + held_out_rows
    rows = order if len(x) >= need else rng.integers(0, len(x), need)
    fit_x, held_x = x[rows[:fit_rows]], x[rows[fit_rows:need]]
    w0 = block.weight.detach().cpu().double().numpy()
    weight_sets = [w0, w0 + rng.normal(0, WEIGHT_JITTER, w0.shape), w0 + rng.normal(0, WEIGHT_JITTER, w0.shape),
                   rng.uniform(-math.pi, math.pi, w0.shape)]

    target = f"fake:{backend}"
    ideal = parse_target("ideal").make_qnn(block.circuit, block.observables, block.input_params, block.weight_params)

    def noisy_qnn(n_shots: int, run_seed: int):
        return parse_target(target, shots=n_shots, seed=run_seed, optimization_level=optimization_level).make_qnn(
            block.circuit, block.observables, block.input_params, block.weight_params)

    fit_qnn = noisy_qnn(fit_shots, seed)
    mu, y = [], []
    for k, (xs, w) in enumerate(zip(np.array_split(fit_x, len(weight_sets)), weight_sets)):
        mu.append(ideal.forward(xs, w))
        y.append(fit_qnn.forward(xs, w))
        if log:
            log(f"  {backend}: fit executions {k + 1}/{len(weight_sets)} ({len(xs)} rows, {fit_shots:,} shots)")
    mu, y = np.concatenate(mu), np.concatenate(y)
    design = np.c_[mu, np.ones(len(mu))]
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    matrix, offset = coef[:-1].T, coef[-1]
    predicted = np.clip(design @ coef, -1, 1)
    shot_var = np.mean((1 - predicted**2) / fit_shots, axis=0)
    residual_sd = np.sqrt(np.clip(np.var(y - predicted, axis=0) - shot_var, 0, None))

    # held out: other inputs at the block's own weights, fresh executions at the training shots
    mu_h = ideal.forward(held_x, w0)
    y_h = noisy_qnn(shots, seed + 1).forward(held_x, w0)
    pred_h = np.clip(mu_h @ matrix.T + offset, -1, 1)
    floor = shot_noise_floor(pred_h, shots, "counts")
    sd = np.sqrt((1 - pred_h**2) / shots + residual_sd**2)
    err, ideal_err = np.abs(y_h - pred_h), np.abs(y_h - mu_h)
    quality = {
        "fit_rows": int(len(mu)), "held_out_rows": int(len(held_x)), "fit_shots": int(fit_shots), "shots": int(shots),
        "error_mean": float(err.mean()), "ideal_error_mean": float(ideal_err.mean()),
        "shot_noise_floor": float(floor.mean()),
        "error_over_floor": float(err.mean() / floor.mean()),
        "ideal_error_over_floor": float(ideal_err.mean() / floor.mean()),
        "z_sd": float(np.std((y_h - pred_h) / sd)),
        "error_per_output": [float(v) for v in err.mean(axis=0)],
        "ideal_error_per_output": [float(v) for v in ideal_err.mean(axis=0)],
    }
    program = fit_qnn.estimator.program(qnn_pub_circuit(fit_qnn))
    source = noise_source(target)
    versions = software_versions()
    info = {"backend": backend, "calibration_date": source.get("calibration_date"),
            "noise_source": source, "circuit": block.spec.to_dict(), "layout": list(program.physical),
            "optimization_level": optimization_level, "seed": seed,
            "fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {k: versions[k] for k in ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "qhybrid")},
            "quality": quality}
    return NoiseSurrogate(matrix, offset, residual_sd, shots=shots, info=info)


def quality_line(surrogate: NoiseSurrogate) -> str:
    """One line on how well ``surrogate`` reproduces Aer on held-out inputs."""
    q = surrogate.info.get("quality", {})
    if not q:
        return f"{surrogate.backend}: no fit quality recorded"
    return (f"{surrogate.backend}: held-out |Aer - surrogate| {q['error_mean']:.4f} = {q['error_over_floor']:.2f}x the "
            f"{q['shots']:,}-shot floor {q['shot_noise_floor']:.4f} (exact outputs: {q['ideal_error_mean']:.4f} = "
            f"{q['ideal_error_over_floor']:.2f}x); z spread {q['z_sd']:.2f}; attenuation "
            f"{min(np.diag(surrogate.matrix.double().cpu().numpy())):.3f}-"
            f"{max(np.diag(surrogate.matrix.double().cpu().numpy())):.3f}")
