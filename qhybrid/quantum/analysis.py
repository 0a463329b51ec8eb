"""Circuit diagnostics for the ansatz study of arXiv 2508.09903: trainability, entanglement and
expressibility of a :class:`CircuitSpec`'s circuit.

Why this exists: choosing an ansatz for the quantum block is a trade-off. Circuits that explore
the state space well (expressive, entangling) also tend to have vanishing gradients (barren
plateaus). The three numbers computed here make that trade-off measurable:

* :func:`gradient_variance` - variance of the cost gradient over random parameters; an
  exponential decay with the number of qubits is the barren-plateau signature;
* :func:`entangling_capability` - mean Meyer-Wallach entanglement of the circuit's states;
* :func:`expressibility_of` - KL divergence between the circuit's fidelity distribution and the
  Haar one (Sim, Johnson, Aspuru-Guzik 2019); lower means more expressive.

Random circuit states come from :class:`~qhybrid.quantum.primitives.exact.CompiledCircuit` (exact, batched
statevector simulation), with the inputs and the weights all drawn i.i.d. uniform in
``[0, 2*pi)``: the study asks what the circuit *can* produce, so the input angles are treated as
free parameters too. Work is done in chunks of rows so memory stays bounded for wide circuits.
"""

from __future__ import annotations

import numbers
from functools import lru_cache

import numpy as np
import torch

from qhybrid.quantum.circuits import CircuitSpec, build_circuit, build_observables
from qhybrid.quantum.primitives.compiled import CompiledCircuit, CompiledObservables

__all__ = [
    "meyer_wallach",
    "haar_fidelity_pdf",
    "expressibility",
    "sample_states",
    "weight_gradients",
    "gradient_variance",
    "entangling_capability",
    "expressibility_of",
    "shot_noise_floor",
]

#: Amplitudes (rows * 2**n) simulated at once; bounds the peak memory of the batched simulation.
_CHUNK_AMPLITUDES = 2**21
#: Floor for Haar bin probabilities, so bins the Haar distribution (almost) never reaches give a
#: large but finite KL contribution instead of ``inf``.
_KL_EPSILON = 1e-12
_NORM_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------
def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_spec(spec) -> CircuitSpec:
    if not isinstance(spec, CircuitSpec):
        raise ValueError(f"spec must be a CircuitSpec, got {type(spec).__name__}")
    return spec


def _seed_sequence(seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return np.random.SeedSequence(seed)


def _check_states(name: str, states) -> tuple[np.ndarray, int]:
    """Rows of normalised statevectors as a 2-D array, and the number of qubits."""
    arr = np.asarray(states)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be a (rows, 2**n) array of statevectors, got shape {np.shape(states)}"
        )
    dim = arr.shape[1]
    n = dim.bit_length() - 1
    if dim < 2 or 2**n != dim:
        raise ValueError(f"{name}: row length {dim} is not 2**n for a number of qubits n >= 1")
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.bool_)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite amplitudes")
    norms = np.sum(np.abs(arr) ** 2, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > _NORM_TOL)
    if bad.size:
        raise ValueError(
            f"{name}: row {bad[0]} has squared norm {norms[bad[0]]:.6g}; statevectors must be "
            "normalised"
        )
    return arr, n


# ---------------------------------------------------------------------------------------------
# state-level measures
# ---------------------------------------------------------------------------------------------
def meyer_wallach(states) -> np.ndarray:
    """Meyer-Wallach entanglement ``Q = 2 (1 - (1/n) sum_k Tr rho_k^2)`` of each state.

    ``states`` is ``(m, 2**n)`` (a single 1-D state is treated as one row), qubit 0 the least
    significant bit. ``Q`` is 0 exactly for product states and 1 for e.g. GHZ states: the average
    linear entropy of the single-qubit marginals, a cheap global entanglement measure. Vectorised
    over rows; the only Python loop is over the ``n`` qubits.
    """
    arr, n = _check_states("states", states)
    m = arr.shape[0]
    psi = arr.reshape((m,) + (2,) * n)  # axis 1 + j holds qubit n - 1 - j
    purity = np.zeros(m)
    for k in range(n):
        a = np.moveaxis(psi, n - k, 1).reshape(m, 2, -1)
        rho = a @ np.conj(np.swapaxes(a, 1, 2))  # (m, 2, 2) reduced state of qubit k
        purity += np.sum(np.abs(rho) ** 2, axis=(1, 2))  # Tr rho^2 for Hermitian rho
    q = 2.0 * (1.0 - purity / n)
    return np.clip(q, 0.0, None)  # rounding can leave -1e-16 for product states


def haar_fidelity_pdf(F, dim: int):
    """Density ``(dim-1) (1-F)^(dim-2)`` of the fidelity between two Haar-random states in
    dimension ``dim``: the reference distribution of the expressibility measure."""
    dim = _check_count("dim", dim, 2)
    F = np.asarray(F, dtype=float)
    if np.any((F < 0) | (F > 1)):
        raise ValueError("F must lie in [0, 1]")
    return (dim - 1) * (1.0 - F) ** (dim - 2)


def _haar_bin_probabilities(dim: int, bins: int) -> np.ndarray:
    """Exact Haar probability of each of ``bins`` equal bins on [0, 1], from the CDF
    ``1 - (1-F)^(dim-1)`` (written as a difference of survival functions, which stays accurate
    for the tiny probabilities near F = 1)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    survival = (1.0 - edges) ** (dim - 1)
    return survival[:-1] - survival[1:]


def _fidelities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(np.abs(np.sum(np.conj(a) * b, axis=1)) ** 2, 0.0, 1.0)


def _kl_from_fidelities(fidelities: np.ndarray, dim: int, bins: int) -> float:
    counts, _ = np.histogram(fidelities, bins=bins, range=(0.0, 1.0))
    p = counts / counts.sum()
    q = _haar_bin_probabilities(dim, bins) + _KL_EPSILON
    mask = p > 0  # 0 log 0 = 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def expressibility(states_a, states_b, bins: int = 75) -> float:
    """``D_KL(P_circuit || P_Haar)`` of the fidelities ``|<a_i|b_i>|^2`` of paired states.

    Sim, Johnson & Aspuru-Guzik (2019): histogram the fidelities on [0, 1] with ``bins`` bins and
    compare with the Haar distribution integrated exactly over each bin. Lower = closer to Haar =
    more expressive. Haar bin probabilities are floored at 1e-12 so a circuit that only reaches
    bins Haar states (almost) never do gives a large finite value rather than ``inf``. With
    ``N`` pairs the estimate carries a positive bias of roughly ``(bins-1)/(2N)``. For many
    qubits Haar fidelities (mean ``1/dim``) nearly all fall in the first bin, so the measure
    saturates near 0 and stops discriminating (already at ~10 qubits with 75 bins).
    """
    a, n_a = _check_states("states_a", states_a)
    b, n_b = _check_states("states_b", states_b)
    if a.shape != b.shape:
        raise ValueError(
            f"states_a and states_b must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"states_a and states_b need at least 2 pairs, got {a.shape[0]}")
    bins = _check_count("bins", bins, 1)
    return _kl_from_fidelities(_fidelities(a, b), a.shape[1], bins)


# ---------------------------------------------------------------------------------------------
# circuit sampling
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)  # compiled wide circuits hold 2**n-sized index tables
def _compiled(spec: CircuitSpec):
    """The spec's circuit, compiled once, plus the columns of its weight parameters."""
    circuit, _, weights = build_circuit(spec)
    compiled = CompiledCircuit(circuit)
    position = {p: i for i, p in enumerate(compiled.parameters)}
    weight_columns = np.array([position[w] for w in weights], dtype=np.int64)
    return compiled, weight_columns


def _random_values(compiled: CompiledCircuit, samples: int, seed) -> np.ndarray:
    """``(samples, P)`` parameter rows, every entry i.i.d. uniform in [0, 2 pi), columns in
    ``compiled.parameters`` order (inputs then weights)."""
    rng = np.random.default_rng(_seed_sequence(seed))
    return rng.uniform(0.0, 2.0 * np.pi, size=(samples, len(compiled.parameters)))


def _chunks(compiled: CompiledCircuit, rows: int, copies: int = 1):
    step = max(1, _CHUNK_AMPLITUDES // (compiled.dim * copies))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _states(compiled: CompiledCircuit, values: np.ndarray) -> np.ndarray:
    """Complex statevectors for parameter rows (real circuits are simulated in float64)."""
    psi = compiled.statevector(torch.from_numpy(np.ascontiguousarray(values)))
    return psi.numpy().astype(np.complex128, copy=False)


def _iter_states(spec: CircuitSpec, samples: int, seed):
    compiled, _ = _compiled(spec)
    values = _random_values(compiled, samples, seed)
    for rows in _chunks(compiled, samples):
        yield _states(compiled, values[rows])


def sample_states(spec: CircuitSpec, samples: int, seed=None) -> np.ndarray:
    """Statevectors ``(samples, 2**n)`` (complex128, qubit 0 least significant) of the spec's
    circuit at random parameters: inputs and weights i.i.d. uniform in [0, 2 pi) from
    ``np.random.default_rng(seed)``. Simulated exactly and batched, so thousands of samples are
    cheap. Gates the simulator treats as phase-free rotations (``p``/``u``) may change the global
    phase, which none of the measures here depend on."""
    spec = _check_spec(spec)
    samples = _check_count("samples", samples, 1)
    compiled, _ = _compiled(spec)
    out = np.empty((samples, compiled.dim), dtype=np.complex128)
    start = 0
    for chunk in _iter_states(spec, samples, seed):
        out[start:start + len(chunk)] = chunk
        start += len(chunk)
    return out


# ---------------------------------------------------------------------------------------------
# circuit-level measures
# ---------------------------------------------------------------------------------------------
def weight_gradients(spec: CircuitSpec, samples: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the cost ``C = <O_0>`` (the spec's first observable) with respect to every
    weight parameter, at random parameter rows drawn as in :func:`sample_states`.

    Returns ``(values, grads)``: ``values`` is ``(samples, P)`` in ``circuit.parameters`` order
    (what the circuit was evaluated at), ``grads`` is ``(samples, num_weights)`` with column ``j``
    the derivative by ``weights[j]``. Exact (adjoint differentiation), so the spread measured by
    :func:`gradient_variance` is the landscape's, not a shot-noise artefact.
    """
    spec = _check_spec(spec)
    samples = _check_count("samples", samples, 1)
    compiled, weight_columns = _compiled(spec)
    if weight_columns.size == 0:
        raise ValueError(f"spec: the {spec.ansatz!r} circuit has no weight parameters")
    observable = CompiledObservables(build_observables(spec)[:1], compiled.num_qubits,
                                     compiled.dtype)
    values = _random_values(compiled, samples, seed)
    grads = np.empty((samples, weight_columns.size))
    for rows in _chunks(compiled, samples, copies=4):  # state + adjoint copy + buffers
        _, jac = compiled.jacobian(torch.from_numpy(np.ascontiguousarray(values[rows])),
                                   observable)
        grads[rows] = jac[:, 0, :].numpy()[:, weight_columns]
    return values, grads


def _variance_with_stderr(g: np.ndarray) -> tuple[float, float]:
    """Mean over columns of the unbiased sample variance, and its standard error.

    The standard error is the delta-method one: with ``y_i = mean_j (g_ij - mean_i g_ij)^2`` the
    estimate is ``N/(N-1) * mean(y)``, so its error is ``N/(N-1) * std(y)/sqrt(N)`` (ignoring the
    O(1/N) effect of centring on the sample mean). Averaging per sample before taking the spread
    accounts for correlations between the weights' gradients.
    """
    n = g.shape[0]
    y = np.mean((g - g.mean(axis=0)) ** 2, axis=1)
    scale = n / (n - 1)
    return float(scale * y.mean()), float(scale * y.std(ddof=1) / np.sqrt(n))


def gradient_variance(spec: CircuitSpec, samples: int, seed=None) -> dict:
    """Barren-plateau diagnostic: spread of ``dC/dtheta_j`` over random parameters.

    ``C`` is the expectation of the spec's first observable (a local cost with the default
    observables, Z on qubit 0); ``theta_j`` runs over the weight parameters only (the inputs are
    randomised but not differentiated). Returns ``variance`` (mean over weights of each weight's
    sample variance), ``variance_first`` (the first weight only), ``stderr`` and
    ``stderr_first`` (delta-method standard errors, see :func:`_variance_with_stderr`),
    ``samples`` and ``num_weights``. A variance shrinking exponentially with ``num_qubits``
    means the circuit is hard to train.
    """
    spec = _check_spec(spec)
    samples = _check_count("samples", samples, 2)
    _, grads = weight_gradients(spec, samples, seed)
    variance, stderr = _variance_with_stderr(grads)
    first, first_err = _variance_with_stderr(grads[:, :1])
    return {
        "variance": variance,
        "variance_first": first,
        "stderr": stderr,
        "stderr_first": first_err,
        "samples": samples,
        "num_weights": int(grads.shape[1]),
    }


def entangling_capability(spec: CircuitSpec, samples: int, seed=None) -> dict:
    """Mean Meyer-Wallach entanglement of the circuit's states over random parameters
    (``mean``, its standard error ``stderr``, ``samples``): how much entanglement the ansatz
    typically produces. Uses the same states as ``sample_states(spec, samples, seed)``."""
    spec = _check_spec(spec)
    samples = _check_count("samples", samples, 2)
    q = np.concatenate([meyer_wallach(chunk) for chunk in _iter_states(spec, samples, seed)])
    return {
        "mean": float(q.mean()),
        "stderr": float(q.std(ddof=1) / np.sqrt(samples)),
        "samples": samples,
    }


def expressibility_of(spec: CircuitSpec, pairs: int, seed=None, bins: int = 75) -> float:
    """:func:`expressibility` of the spec's circuit from ``pairs`` pairs of states drawn as in
    :func:`sample_states`, the two members of each pair from independent streams spawned from
    ``seed``. Lower = more expressive."""
    spec = _check_spec(spec)
    pairs = _check_count("pairs", pairs, 2)
    bins = _check_count("bins", bins, 1)
    seed_a, seed_b = _seed_sequence(seed).spawn(2)
    fidelities = np.concatenate([
        _fidelities(a, b)
        for a, b in zip(_iter_states(spec, pairs, seed_a), _iter_states(spec, pairs, seed_b))
    ])
    compiled, _ = _compiled(spec)
    return _kl_from_fidelities(fidelities, compiled.dim, bins)


def shot_noise_floor(ideal: np.ndarray, shots: int, method: str = "counts") -> np.ndarray:
    """Expected |error| of each output from ``shots`` noiseless shots: ``sqrt(2/pi) * sigma`` (the
    mean absolute value of a normal error) with ``sigma^2 = (1 - mu^2) / shots``, a Pauli
    observable's single-shot variance over the shots, for ideal outputs ``mu``. No noise study at
    that shot budget resolves errors below it. The fake target's ``estimator`` method adds Gaussian
    noise of ``sigma = 1/sqrt(shots)`` whatever mu is, so its floor is ``sqrt(2/pi) / sqrt(shots)``."""
    ideal = np.asarray(ideal, dtype=float)
    if method == "estimator":
        return np.full_like(ideal, np.sqrt(2 / np.pi) / np.sqrt(shots))
    return np.sqrt(2 / np.pi) * np.sqrt(np.clip(1 - ideal**2, 0, None) / shots)
