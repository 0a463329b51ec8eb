"""Circuits compiled into vectorised PyTorch programs: the simulator behind the ``ideal`` target.

A circuit is compiled once into a short program of tensor operations on batched statevectors:

* every parametric gate is a Pauli rotation ``exp(-i a/2 P)`` whose angle ``a`` is an affine
  function of the circuit parameters (``A @ values + b``), so all angles of a batch come from one
  matrix product;
* runs of fixed gates whose matrices are monomial (X, CX, CZ, SWAP, S, T, ...) are fused into one
  permutation-with-phases; other fixed 1-2 qubit gates (H, SX, ...) are applied as small matrices;
* circuits whose gates are all real (RY + CX, e.g. ``real_amplitudes`` with angle encoding) are
  simulated in float64 instead of complex128.

Gradients use adjoint differentiation: one backward sweep over the gates gives the derivative of
every observable with respect to every gate angle, for the whole batch at once
(``dE/da = Re <lambda|Q|phi>`` with ``Q = -iP``), which the affine map turns into parameter
derivatives. This is the gate-by-gate path; :mod:`~qhybrid.quantum.primitives.fused` schedules
the same compiled gates into matrices for large batches that share their weights, and
:mod:`~qhybrid.quantum.primitives.exact` puts both behind Qiskit's primitive interfaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit
from qiskit.quantum_info import Operator, SparsePauliOp

from qhybrid.errors import one_line

#: Largest circuit the ideal target simulates (2**20 amplitudes per batch row).
MAX_IDEAL_QUBITS = 20

#: Parametric gates understood natively: name -> Pauli per gate qubit (in argument order), and
#: which ``params`` entry is the angle. ``p``/``u1`` equal ``rz`` up to a global phase.
_PAULI_ROTATIONS = {
    "rx": ("X",), "ry": ("Y",), "rz": ("Z",), "p": ("Z",), "u1": ("Z",), "phase": ("Z",),
    "rxx": ("X", "X"), "ryy": ("Y", "Y"), "rzz": ("Z", "Z"), "rzx": ("Z", "X"),
}
_IGNORED = {"barrier", "delay", "global_phase"}
_REAL_TOL = 1e-12


class UnsupportedCircuitError(ValueError):
    """The ideal target cannot simulate this circuit (and says which instruction and why)."""


# ---------------------------------------------------------------------------------------------
# compilation
# ---------------------------------------------------------------------------------------------
class _Rotation:
    """exp(-i a/2 P) = cos(a/2) + sin(a/2) Q with Q = -iP, a monomial matrix.

    One-qubit X/Y/Z rotations use strided views of the state (no gather); other Paulis use a
    precomputed permutation with phases.
    """

    def __init__(self, slot: int, paulis, qubits, num_qubits: int, basis: torch.Tensor):
        self.slot = slot
        xmask = zmask = ny = 0
        for pauli, q in zip(paulis, qubits):
            if pauli in "XY":
                xmask |= 1 << q
            if pauli in "ZY":
                zmask |= 1 << q
            ny += pauli == "Y"
        index, phase = _pauli_action(basis, xmask, zmask, ny)
        self.index = None if xmask == 0 else index
        self.phase = -1j * phase  # Q = -iP
        self.single = None
        if len(paulis) == 1:
            q = qubits[0]
            # Q on one qubit: Q|0> and Q|1> coefficients, as (out0 <- in?, out1 <- in?) factors
            local = {"X": (-1j, -1j), "Y": (-1.0, 1.0), "Z": (-1j, 1j)}[paulis[0]]
            self.single = (paulis[0] != "Z", 2 ** (num_qubits - q - 1), 2**q, local)

    @property
    def is_real(self) -> bool:
        return bool(torch.max(self.phase.imag.abs()) <= _REAL_TOL)

    def set_dtype(self, dtype) -> None:
        real = dtype == torch.float64
        self.phase = self.phase.real.clone() if real else self.phase
        if self.single is not None:
            swap, left, right, (a, b) = self.single
            if real:
                a, b = float(np.real(a)), float(np.real(b))
            self.diag2 = torch.tensor([a, b], dtype=dtype).view(2, 1)
            self.single = (swap, left, right, (a, b))

    def q_into(self, state: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out = Q state (state: (..., dim))."""
        if self.single is not None:
            swap, left, right, (a, b) = self.single
            lead = state.shape[:-1]
            sv = state.view(*lead, left, 2, right)
            ov = out.view(*lead, left, 2, right)
            if swap:  # X or Y: out0 = a * in1, out1 = b * in0
                torch.mul(sv[..., 1, :], a, out=ov[..., 0, :])
                torch.mul(sv[..., 0, :], b, out=ov[..., 1, :])
            else:  # Z: diagonal
                torch.mul(sv, self.diag2, out=ov)
            return out
        if self.index is None:
            return torch.mul(state, self.phase, out=out)
        torch.index_select(state, -1, self.index, out=out)
        return out.mul_(self.phase)


@dataclass
class _Monomial:
    """A fused run of fixed monomial gates: psi'[x] = phase[x] * psi[index[x]]."""

    index: torch.Tensor | None
    phase: torch.Tensor | None
    inverse: torch.Tensor | None = None


@dataclass(frozen=True)
class _Step:
    """One gate of the flattened circuit, before any fusion: what the fused path schedules.

    Small on purpose (no 2**n tables), so a 20-qubit circuit can record its steps cheaply.
    """

    qubits: tuple[int, ...]
    slot: int | None = None  # angle slot of a Pauli rotation
    paulis: tuple[str, ...] | None = None  # the rotation's Pauli per qubit
    matrix: np.ndarray | None = None  # a fixed gate, little-endian in ``qubits``


@dataclass
class _Dense:
    """A fixed, non-monomial 1- or 2-qubit gate applied as a small matrix."""

    qubits: tuple[int, ...]
    matrix: torch.Tensor  # (2**k, 2**k), little-endian in ``qubits``


class CompiledCircuit:
    """A circuit turned into vectorised tensor operations (see the module docstring).

    ``parameters`` is ``circuit.parameters`` (Qiskit's sorted order): the columns of every
    parameter-value array given to :meth:`angles`, :meth:`statevector` and :meth:`jacobian`.
    """

    def __init__(self, circuit: QuantumCircuit):
        n = circuit.num_qubits
        if n > MAX_IDEAL_QUBITS:
            raise UnsupportedCircuitError(
                f"the ideal target simulates at most {MAX_IDEAL_QUBITS} qubits, this circuit has "
                f"{n}; use fewer qubits or a fake:/ibm: target"
            )
        if circuit.num_clbits and any(i.operation.name == "measure" for i in circuit.data):
            raise UnsupportedCircuitError(
                "the ideal target computes expectation values of unitary circuits; remove the "
                "measurements (the estimator measures the observables itself)"
            )
        self.circuit = circuit
        self.num_qubits = n
        self.dim = 2**n
        self.parameters = list(circuit.parameters)
        self._param_index = {p: i for i, p in enumerate(self.parameters)}
        self._basis = torch.arange(self.dim, dtype=torch.int64)
        self.steps: list[_Step] = []  # every gate, unfused, with its qubits
        coeff_rows: list[np.ndarray] = []
        offsets: list[float] = []
        for instruction in self._flatten(circuit):
            op = instruction.operation
            qubits = tuple(circuit.find_bit(q).index for q in instruction.qubits)
            name = op.name
            if name in _IGNORED:
                continue
            parametric = any(isinstance(p, ParameterExpression) for p in op.params)
            if parametric:
                paulis = _PAULI_ROTATIONS[name] if name in _PAULI_ROTATIONS else None
                if name in ("u", "u3"):
                    theta, phi, lam = op.params
                    # U(t, f, l) = e^{i(f+l)/2} RZ(f) RY(t) RZ(l)
                    for angle, pauli in ((lam, "Z"), (theta, "Y"), (phi, "Z")):
                        self._add_rotation(angle, (pauli,), qubits, coeff_rows, offsets)
                    continue
                if paulis is None:  # pragma: no cover - _flatten decomposes everything else
                    raise UnsupportedCircuitError(f"cannot simulate parametric gate {name!r}")
                self._add_rotation(op.params[0], paulis, qubits, coeff_rows, offsets)
                continue
            try:
                matrix = np.asarray(Operator(op).data, dtype=complex)
            except Exception as exc:  # noqa: BLE001 - Qiskit raises several kinds here
                raise UnsupportedCircuitError(
                    f"the ideal target cannot simulate instruction {name!r} "
                    f"({one_line(exc, with_type=True)}); it simulates gates with a unitary matrix only"
                ) from None
            self.steps.append(_Step(qubits, matrix=matrix))
        num_slots = len(coeff_rows)
        self.num_angles = num_slots
        self.angle_coeffs = torch.as_tensor(
            np.array(coeff_rows).reshape(num_slots, len(self.parameters)), dtype=torch.float64
        )
        self.angle_offsets = torch.as_tensor(np.array(offsets, dtype=float), dtype=torch.float64)
        self.ops: list[_Rotation | _Monomial | _Dense] = self.kernels(self.steps)
        rotations_real = all(op.is_real for op in self.ops if isinstance(op, _Rotation))
        fixed_real = all(np.max(np.abs(s.matrix.imag)) <= _REAL_TOL for s in self.steps if s.matrix is not None)
        self.is_real = rotations_real and fixed_real
        self.dtype = torch.float64 if self.is_real else torch.complex128
        self.ops = self.in_dtype(self.ops)

    def kernels(self, steps: list[_Step]) -> list:
        """The n-qubit kernels of ``steps``, in order: a rotation per parametric gate, every run of
        consecutive fixed monomial gates (CX ladders, CZ, X, S, ...) fused into one permutation with
        phases (left out when it is the identity), other fixed gates as small dense matrices.
        Constants are complex; :meth:`in_dtype` stores them in the simulation dtype."""
        ops: list = []
        pending: tuple[torch.Tensor, torch.Tensor] | None = None  # fused monomial (index, phase)

        def flush() -> None:
            nonlocal pending
            if pending is not None:
                index, phase = pending
                ident = bool(torch.equal(index, self._basis))
                trivial = bool(torch.all(phase == 1))
                if not (ident and trivial):
                    ops.append(_Monomial(None if ident else index, None if trivial else phase))
                pending = None

        for step in steps:
            if step.slot is not None:
                flush()
                ops.append(_Rotation(step.slot, step.paulis, step.qubits, self.num_qubits, self._basis))
                continue
            mono = _monomial(step.matrix)
            if mono is None:
                flush()
                ops.append(_Dense(step.qubits, torch.as_tensor(step.matrix)))
                continue
            index, phase = self._lift_monomial(mono, step.qubits)
            if pending is None:
                pending = (index, phase)
            else:  # apply pending first, then this one
                p_index, p_phase = pending
                pending = (p_index[index], phase * p_phase[index])
        flush()
        return ops

    def in_dtype(self, ops: list) -> list:
        """``ops`` with their constants stored once in the simulation dtype (in place)."""
        real = self.dtype == torch.float64
        for op in ops:
            if isinstance(op, _Rotation):
                op.set_dtype(self.dtype)
            elif isinstance(op, _Monomial) and op.phase is not None:
                op.phase = op.phase.real.clone() if real else op.phase
            elif isinstance(op, _Dense):
                op.matrix = op.matrix.real.clone() if real else op.matrix
        return ops

    # -- construction helpers -----------------------------------------------------------------
    @staticmethod
    def _flatten(circuit: QuantumCircuit, depth: int = 0):
        """Yield instructions, decomposing gates the simulator does not know natively."""
        for instruction in circuit.data:
            op = instruction.operation
            name = op.name
            if name in _IGNORED or name in _PAULI_ROTATIONS or name in ("u", "u3"):
                yield instruction
                continue
            parametric = any(isinstance(p, ParameterExpression) for p in op.params)
            if not parametric and op.num_qubits <= 2 and not op.num_clbits and name != "measure":
                yield instruction
                continue
            definition = getattr(op, "definition", None)
            if definition is None or depth > 8:
                raise UnsupportedCircuitError(
                    f"the ideal target cannot simulate instruction {name!r} on "
                    f"{op.num_qubits} qubit(s); supported: Pauli rotations "
                    f"({', '.join(sorted(_PAULI_ROTATIONS))}, u), fixed gates on 1-2 qubits, "
                    "and anything that decomposes into them"
                )
            sub = QuantumCircuit(circuit.num_qubits)
            mapping = [sub.qubits[circuit.find_bit(q).index] for q in instruction.qubits]
            sub.compose(definition, qubits=mapping, inplace=True)
            yield from CompiledCircuit._flatten(sub, depth + 1)

    def _affine(self, angle) -> tuple[np.ndarray, float]:
        """``angle = coeffs @ values + offset``; fail clearly for a non-linear expression."""
        coeffs = np.zeros(len(self.parameters))
        if isinstance(angle, Parameter):
            coeffs[self._param_index[angle]] = 1.0
            return coeffs, 0.0
        if not isinstance(angle, ParameterExpression):
            return coeffs, float(angle)
        for par in angle.parameters:
            derivative = angle.gradient(par)
            if isinstance(derivative, ParameterExpression) and derivative.parameters:
                raise UnsupportedCircuitError(
                    f"gate angle {angle} is not linear in {par}; the ideal target supports "
                    "angles of the form a*x + b"
                )
            coeffs[self._param_index[par]] = float(np.real(complex(derivative)))
        offset = angle.bind({par: 0.0 for par in angle.parameters})
        return coeffs, float(np.real(complex(offset)))

    def _add_rotation(self, angle, paulis, qubits, coeff_rows, offsets) -> None:
        coeffs, offset = self._affine(angle)
        coeff_rows.append(coeffs)
        offsets.append(offset)
        self.steps.append(_Step(tuple(qubits), slot=len(coeff_rows) - 1, paulis=tuple(paulis)))

    def _lift_monomial(self, mono, qubits) -> tuple[torch.Tensor, torch.Tensor]:
        """Lift a k-qubit monomial gate (local source index and phase) to the full register."""
        local_src, local_phase = mono
        basis = self._basis
        local = torch.zeros_like(basis)
        for pos, q in enumerate(qubits):
            local |= ((basis >> q) & 1) << pos
        # psi'[x] = U[x, y] psi[y]: the unique y differs from x only on the gate's qubits
        src_local = torch.as_tensor(local_src)[local]
        index = basis.clone()
        for pos, q in enumerate(qubits):
            bit = (src_local >> pos) & 1
            index = (index & ~(1 << q)) | (bit << q)
        phase = torch.as_tensor(local_phase, dtype=torch.complex128)[local]
        return index, phase

    # -- simulation -----------------------------------------------------------------------------
    def angles(self, values: torch.Tensor) -> torch.Tensor:
        """Gate angles for each row of parameter values: ``(rows, num_angles)``."""
        return values @ self.angle_coeffs.T + self.angle_offsets

    def _half_angle_tables(self, values: torch.Tensor, lead: int):
        """cos/sin of half angles as (num_angles, rows, 1[, 1]) so ``table[slot]`` broadcasts."""
        half = self.angles(values).T / 2
        shape = (self.num_angles, values.shape[0]) + (1,) * lead
        return torch.cos(half).reshape(shape), torch.sin(half).reshape(shape)

    def _check_values(self, values) -> torch.Tensor:
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.dim() != 2 or values.shape[1] != len(self.parameters):
            raise ValueError(
                f"parameter values must have shape (rows, {len(self.parameters)}), "
                f"got {tuple(values.shape)}"
            )
        return values

    def _forward(self, state: torch.Tensor, cos, sin) -> torch.Tensor:
        """Run the circuit on ``state`` in place (as far as possible); returns the final state."""
        return apply_ops(state, self.ops, cos, sin, self.num_qubits)

    def statevector(self, values: torch.Tensor) -> torch.Tensor:
        """Final states ``(rows, 2**n)`` for parameter values ``(rows, num_parameters)``."""
        values = self._check_values(values)
        with torch.inference_mode():
            cos, sin = self._half_angle_tables(values, 1)
            return self._forward(self._initial(values.shape[0]), cos, sin)

    def _initial(self, rows: int) -> torch.Tensor:
        psi = torch.zeros(rows, self.dim, dtype=self.dtype)
        psi[:, 0] = 1
        return psi

    # -- gradients ------------------------------------------------------------------------------
    def _adjoint(self, values: torch.Tensor, make_lam):
        """Adjoint sweep. ``make_lam(psi) -> (rows, K, dim)`` gives ``O_k psi`` (or a weighted
        sum of observables). Returns ``(<psi|lam_k>, dE_k/d(angle))`` as ((rows, K), (rows, K, G)).

        ``phi`` (the state) and the ``lam_k`` are stacked into one (rows, K+1, dim) tensor so that
        undoing a gate is a single in-place operation on all of them; every rotation then
        contributes ``dE_k/da = Re <lam_k|Q|phi>`` at its position in the circuit.
        """
        values = self._check_values(values)
        rows = values.shape[0]
        with torch.inference_mode():
            cos1, sin1 = self._half_angle_tables(values, 1)
            psi = self._forward(self._initial(rows), cos1, sin1)
            lam = make_lam(psi)
            count = lam.shape[1]
            evs = _real_inner(lam, psi.unsqueeze(1))
            stack = torch.empty(rows, count + 1, self.dim, dtype=self.dtype)
            stack[:, 0] = psi
            stack[:, 1:] = lam
            del lam
            cos, sin = cos1.unsqueeze(-1), sin1.unsqueeze(-1)
            grads = torch.empty(self.num_angles, rows, count, dtype=torch.float64)

            def record(slot: int, values: torch.Tensor) -> None:
                grads[slot] = values

            undo_ops(stack, self.ops, cos, sin, self.num_qubits, record)
            return evs, grads.permute(1, 2, 0)

    def jacobian(self, values: torch.Tensor, observables: "CompiledObservables"):
        """Expectation values ``(rows, K)`` and their derivatives ``(rows, K, num_parameters)``."""
        evs, grads = self._adjoint(values, observables.apply)
        return evs, grads @ self.angle_coeffs

    def vjp(self, values: torch.Tensor, observables: "CompiledObservables", cotangent):
        """``sum_k cotangent[r, k] * dE_k/d values[r]`` as (rows, num_parameters).

        The derivative of a weighted sum of observables is the derivative of the single observable
        ``sum_k g_k O_k``, so this costs one adjoint copy per row instead of K.
        """
        cotangent = torch.as_tensor(cotangent, dtype=torch.float64)
        _, grads = self._adjoint(values, lambda psi: observables.apply_weighted(psi, cotangent))
        return grads[:, 0] @ self.angle_coeffs


def apply_ops(state: torch.Tensor, ops, cos, sin, num_qubits: int) -> torch.Tensor:
    """Apply ``ops`` to states ``(..., 2**n)``, in place where possible; returns the result.

    ``cos[slot]`` / ``sin[slot]`` are the half angles of rotation ``slot``, shaped to broadcast
    against ``state`` (one row per state, or one row for all).
    """
    buf = torch.empty_like(state)
    for op in ops:
        if isinstance(op, _Rotation):
            op.q_into(state, buf)
            state.mul_(cos[op.slot]).addcmul_(buf, sin[op.slot])
        elif isinstance(op, _Monomial):
            if op.index is not None:
                torch.index_select(state, -1, op.index, out=buf)
                state, buf = buf, state
            if op.phase is not None:
                state.mul_(op.phase)
        else:
            state = _apply_dense(state, op.matrix, op.qubits, num_qubits)
            buf = torch.empty_like(state)
    return state


def undo_ops(stack: torch.Tensor, ops, cos, sin, num_qubits: int, record) -> torch.Tensor:
    """The adjoint sweep: undo ``ops`` (last first) on ``stack = (rows, 1 + K, dim)``, which holds
    a state phi and K adjoint states lam_k per row. Before undoing each rotation it calls
    ``record(slot, Re <lam_k|Q phi>)`` with a (rows, K) tensor: the derivative of the k-th
    expectation value with respect to that rotation's angle. Returns the undone stack."""
    buf = torch.empty_like(stack)
    real = not stack.is_complex()
    for op in reversed(ops):
        if isinstance(op, _Rotation):
            op.q_into(stack, buf)
            q_phi = buf[:, 0].unsqueeze(-1)
            lams = stack[:, 1:]
            if real:
                record(op.slot, torch.matmul(lams, q_phi).squeeze(-1))
            else:
                record(op.slot, torch.matmul(lams.conj(), q_phi).squeeze(-1).real)
            stack.mul_(cos[op.slot]).addcmul_(buf, sin[op.slot], value=-1)
        elif isinstance(op, _Monomial):
            if op.phase is not None:
                stack.mul_(op.phase.conj())
            if op.index is not None:
                torch.index_select(stack, -1, _inverse_permutation(op), out=buf)
                stack, buf = buf, stack
        else:
            stack = _apply_dense(stack, op.matrix.conj().T, op.qubits, num_qubits)
            buf = torch.empty_like(stack)
    return stack


def probabilities(psi: torch.Tensor) -> torch.Tensor:
    """|psi|**2 per amplitude (real dtype)."""
    return psi.real**2 + psi.imag**2 if psi.is_complex() else psi * psi


def shared_columns(values: np.ndarray) -> np.ndarray:
    """Columns of a (rows, P) parameter array that hold one value in every row (with one row,
    every column)."""
    values = np.asarray(values)
    return np.all(values == values[:1], axis=0)


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re <a|b> over the last axis, broadcasting the others."""
    if a.is_complex():
        return (a.real * b.real + a.imag * b.imag).sum(-1)
    return (a * b).sum(-1)


def _inverse_permutation(op: _Monomial) -> torch.Tensor:
    if op.inverse is None:
        inverse = torch.empty_like(op.index)
        inverse[op.index] = torch.arange(op.index.numel())
        op.inverse = inverse
    return op.inverse


def _pauli_action(basis: torch.Tensor, xmask: int, zmask: int, ny: int):
    """P psi [x] = phase[x] psi[x ^ xmask] for P = i^ny X^x Z^z (Y = iXZ per qubit)."""
    source = basis ^ xmask
    parity = _popcount(source & zmask) & 1
    sign = 1 - 2 * parity.to(torch.float64)
    phase = (1j**ny) * sign.to(torch.complex128)
    return source, phase


def _popcount(x: torch.Tensor) -> torch.Tensor:
    count = torch.zeros_like(x)
    while bool(torch.any(x)):
        count += x & 1
        x = x >> 1
    return count


def _monomial(matrix: np.ndarray):
    """(source index, phase) per output basis state if ``matrix`` has one non-zero per row."""
    nonzero = np.abs(matrix) > 1e-12
    if not np.all(nonzero.sum(axis=1) == 1) or not np.all(nonzero.sum(axis=0) == 1):
        return None
    src = np.argmax(nonzero, axis=1)
    phase = matrix[np.arange(matrix.shape[0]), src]
    return src.astype(np.int64), phase


def _apply_dense(psi: torch.Tensor, matrix: torch.Tensor, qubits, n: int) -> torch.Tensor:
    """Apply a small little-endian matrix acting on ``qubits`` to states of shape (..., 2**n)."""
    lead = psi.shape[:-1]
    k = len(qubits)
    state = psi.reshape(*lead, *([2] * n))  # tensor axis len(lead)+j holds qubit n-1-j
    axes = [len(lead) + n - 1 - q for q in reversed(qubits)]  # most significant gate qubit first
    front = list(range(len(lead), len(lead) + k))
    state = torch.movedim(state, axes, front)
    flat = torch.matmul(matrix, state.reshape(*lead, 2**k, -1))
    state = torch.movedim(flat.reshape(*lead, *([2] * n)), front, axes)
    return state.reshape(*lead, 2**n)


class CompiledObservables:
    """A list of Pauli-sum observables, ready to apply to batched states.

    Diagonal (I/Z-only) terms are folded into one ``(dim, K)`` matrix so that all of them cost a
    single product; other terms are applied as permutations with phases. For real circuits the
    imaginary parts of ``O psi`` never reach a real expectation value or gradient, so they are
    dropped and everything stays in float64.
    """

    def __init__(self, observables: Sequence[SparsePauliOp], num_qubits: int, dtype):
        dim = 2**num_qubits
        basis = torch.arange(dim, dtype=torch.int64)
        self.count = len(observables)
        self.dtype = dtype
        real = dtype == torch.float64
        diag = torch.zeros(dim, self.count, dtype=torch.float64)
        self.offdiag: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        weights = 1 << np.arange(num_qubits)
        for k, op in enumerate(observables):
            if op.num_qubits != num_qubits:
                raise ValueError(
                    f"observable {k} acts on {op.num_qubits} qubits, the circuit has {num_qubits}"
                )
            op = op.simplify(atol=0)
            coeffs = np.asarray(op.coeffs)
            paulis = op.paulis
            for t in range(len(op)):
                z = int(np.dot(paulis.z[t], weights))
                x = int(np.dot(paulis.x[t], weights))
                ny = int(np.sum(paulis.z[t] & paulis.x[t]))
                # Qiskit stores P = (-i)^q Z^z X^x with q = (label phase + #Y) mod 4, so
                # (P psi)[i] = (-i)^q (-1)^{popcount(z & i)} psi[i ^ x].
                q = (int(paulis.phase[t]) + ny) % 4
                sign = 1 - 2 * (_popcount(basis & z) & 1).to(torch.float64)
                phase = complex(coeffs[t]) * ((-1j) ** q) * sign.to(torch.complex128)
                if x == 0:
                    if torch.max(phase.imag.abs()) > 1e-10:
                        raise ValueError(
                            f"observable {k} is not Hermitian (complex coefficient on a "
                            "diagonal term); the estimator returns real expectation values only"
                        )
                    diag[:, k] += phase.real
                elif real:
                    if torch.max(phase.real.abs()) > _REAL_TOL:
                        self.offdiag.append((k, basis ^ x, phase.real.clone()))
                else:
                    self.offdiag.append((k, basis ^ x, phase))
        self.diag = diag
        self._diag_t = diag.T.contiguous()
        #: each observable's largest possible |value|, sum |c| over its Pauli terms
        self.bound = np.array([float(np.sum(np.abs(op.coeffs))) for op in observables])

    def apply(self, psi: torch.Tensor) -> torch.Tensor:
        """``O_k psi`` for every observable: (rows, dim) -> (rows, K, dim)."""
        out = psi.unsqueeze(1) * self._diag_t
        for k, src, phase in self.offdiag:
            out[:, k] += psi.index_select(-1, src) * phase
        return out

    def apply_weighted(self, psi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``(sum_k w[r, k] O_k) psi[r]`` as (rows, 1, dim)."""
        out = psi * (weights @ self._diag_t)
        for k, src, phase in self.offdiag:
            out += psi.index_select(-1, src) * phase * weights[:, k : k + 1]
        return out.unsqueeze(1)

    def expectation(self, psi: torch.Tensor) -> torch.Tensor:
        """``<psi|O_k|psi>`` as (rows, K)."""
        evs = probabilities(psi) @ self.diag
        if self.offdiag:
            for k, src, phase in self.offdiag:
                term = psi.index_select(-1, src) * phase
                evs[:, k] += _real_inner(psi, term)
        return evs
