"""The fused exact path: a batch that shares its weights is one matrix product per weight block.

Why: a per-position quantum layer evaluates one circuit on batch x positions rows (1,024 to
4,096 per training step), and sampling evaluates the same frozen weights at every step. Applied
gate by gate, every row pays for every gate. But the parameters split into columns that differ
from row to row (the inputs) and columns that are the same in every row (the weights, which an
``EstimatorQNN`` broadcasts), and so do the gates:

* the leading single-qubit gates (the angle encoding, usually followed by the ansatz's first
  rotation layer) turn ``|0...0>`` into a **product state**, built per row from 2-vectors with
  one Kronecker product and no gate applications;
* every maximal run of gates whose angles are shared (after moving gates past gates on other
  qubits) is the same unitary ``U`` for every row, so it becomes **one matrix** built once
  (by running its gates on the 2**n basis states) and applied to the whole batch by one
  ``(rows, 2**n) @ (2**n, 2**n)`` product; it stays cached while its angles do not change, which
  is every call of a sampling run;
* gates whose angles vary per row (re-uploaded inputs) are applied gate by gate, as before.

Gradients (the vector-Jacobian product a PyTorch backward needs) use the same adjoint method as
:class:`~qhybrid.quantum.primitives.exact.CompiledCircuit`, with two changes. Through a fused
block the adjoint state is one product with ``U^dagger``. And a shared angle's gradient is only
needed summed over rows: ``sum_r Re <lam_r|Q|phi_r> = Re tr(Q M)`` with
``M = sum_r |phi_r><lam_r|``, a ``2**n x 2**n`` matrix formed by one product, so the sweep over
the block's gates runs on 2**n pairs ``(e_i, M^dagger e_i)`` instead of on every row. The product
state's gradient contracts the adjoint state with the other qubits' 2-vectors (prefix/suffix
partial contractions, linear in the state size).

Which path is faster depends on rows, qubits and how much of the circuit is shared;
:func:`choose_path` decides from a cost model measured on CPUs, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qhybrid.quantum.primitives.compiled import (
    CompiledCircuit,
    CompiledObservables,
    _monomial,
    _Step,
    apply_ops,
    undo_ops,
)

#: Widest circuit the fused path takes: its matrices hold 4**n amplitudes (16 Mi at 12 qubits).
MAX_FUSED_QUBITS = 12
#: Cost of one pass of an element-wise gate kernel over one amplitude, in units of one
#: multiply-add inside a matrix product (measured: ~0.4 ns vs ~0.015 ns on a 2-core Xeon;
#: taken lower so that close calls stay on the simpler gate-by-gate path).
GATE_PASS_COST = 20.0
#: Element-wise passes per gate kind (a rotation reads and writes the state three times).
_PASSES = {"rotation": 3, "monomial": 2, "dense": 4}
FUSION_MODES = ("auto", "always", "never")
PRECISIONS = ("float64", "float32")

# -iP for one qubit: the derivative of exp(-i a/2 P) is Q/2 times the gate.
_LOCAL_Q = {
    "X": np.array([[0, -1j], [-1j, 0]]),
    "Y": np.array([[0, -1], [1, 0]], dtype=complex),
    "Z": np.array([[-1j, 0], [0, 1j]]),
}


@dataclass
class _Block:
    """A scheduled run of steps: shared (same angles for every row) or per row."""

    shared: bool
    steps: list[_Step]
    ops: list = None  # n-qubit kernels, monomial runs fused
    as_matrix: bool = False  # shared blocks only: applied as one 2**n x 2**n product
    passes: int = 0  # element-wise passes over the state, gate by gate


@dataclass(frozen=True)
class PathChoice:
    """Which exact path a call takes, and the cost estimates behind it (in multiply-adds)."""

    path: str  # "fused" or "gate-by-gate"
    reason: str
    fused_cost: float
    gate_cost: float


class FusedProgram:
    """A compiled circuit scheduled for a batch whose ``shared`` parameter columns are the same
    in every row (see the module docstring).

    Args:
        compiled: the circuit, compiled for the gate-by-gate path.
        shared: boolean mask over ``compiled.parameters``.
        precision: ``"float64"`` (default) or ``"float32"``: the dtype of the state in the
            matrix products and the product state; kernels applied gate by gate and the
            gradient sweeps run in float64 either way.
    """

    def __init__(self, compiled: CompiledCircuit, shared: np.ndarray, precision: str = "float64"):
        if compiled.num_qubits > MAX_FUSED_QUBITS:
            raise ValueError(
                f"the fused path takes at most {MAX_FUSED_QUBITS} qubits, the circuit has "
                f"{compiled.num_qubits}"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.compiled = compiled
        self.n = compiled.num_qubits
        self.dim = compiled.dim
        self.shared = np.asarray(shared, dtype=bool)
        coeffs = compiled.angle_coeffs.numpy()
        self.row_slot = np.any(coeffs[:, ~self.shared] != 0, axis=1)  # angle varies per row
        self.dtype = compiled.dtype  # of the gate-by-gate kernels
        single = precision == "float32"
        self.work_dtype = {
            (torch.float64, False): torch.float64, (torch.float64, True): torch.float32,
            (torch.complex128, False): torch.complex128, (torch.complex128, True): torch.complex64,
        }[(self.dtype, single)]
        self.precision = precision
        self.local_dtype = torch.float64 if self.dtype == torch.float64 else torch.complex128
        self._local_q = {k: torch.as_tensor(v.real if self.dtype == torch.float64 else v)
                         for k, v in _LOCAL_Q.items()}
        self.prefix, self.blocks = self._schedule(compiled.steps)
        self.layers = self._prefix_layers()
        for block in self.blocks:
            block.ops = compiled.in_dtype(compiled.kernels(block.steps))
            block.passes = sum(_PASSES[_kind(s)] for s in block.steps)
            # a product costs dim multiply-adds per amplitude; gate by gate costs passes
            block.as_matrix = block.shared and self.dim <= GATE_PASS_COST * block.passes
        self.total_passes = sum(_PASSES[_kind(s)] for s in compiled.steps)
        self.row_passes = sum(b.passes for b in self.blocks if not b.as_matrix)
        self.matrix_blocks = sum(b.as_matrix for b in self.blocks)
        self.matrix_passes = sum(b.passes for b in self.blocks if b.as_matrix)
        self._matrices: dict[int, tuple[bytes, torch.Tensor]] = {}
        self._last_forward: tuple | None = None

    # -- scheduling ---------------------------------------------------------------------------
    def _is_row(self, step: _Step) -> bool:
        return step.slot is not None and bool(self.row_slot[step.slot])

    def _schedule(self, steps: list[_Step]):
        """Reorder gates (only past gates on other qubits) into a single-qubit prefix per qubit,
        then alternating shared and per-row blocks, each as long as possible."""
        queues: list[list[int]] = [[] for _ in range(self.n)]
        for i, step in enumerate(steps):
            for q in step.qubits:
                queues[q].append(i)
        heads = [0] * self.n
        done = [False] * len(steps)

        def ready() -> list[int]:
            seen = []
            for q in range(self.n):
                if heads[q] < len(queues[q]):
                    i = queues[q][heads[q]]
                    if i not in seen and all(
                        heads[p] < len(queues[p]) and queues[p][heads[p]] == i for p in steps[i].qubits
                    ):
                        seen.append(i)
            return sorted(seen)

        def take(i: int) -> None:
            done[i] = True
            for q in steps[i].qubits:
                heads[q] += 1

        prefix: list[list[_Step]] = [[] for _ in range(self.n)]
        while True:
            front = [i for i in ready() if len(steps[i].qubits) == 1]
            if not front:
                break
            for i in front:
                prefix[steps[i].qubits[0]].append(steps[i])
                take(i)
        blocks: list[_Block] = []
        while not all(done):
            if blocks:  # the last block ended because none of its kind was ready
                kind_shared = not blocks[-1].shared
            else:
                kind_shared = any(not self._is_row(steps[i]) for i in ready())
            block = _Block(shared=kind_shared, steps=[])
            while True:
                front = [i for i in ready() if self._is_row(steps[i]) != kind_shared]
                if not front:
                    break
                # fixed gates first, as long as any is ready: consecutive monomial gates (a CX
                # ladder) fuse into one permutation
                fixed = [i for i in front if steps[i].slot is None]
                for i in fixed or front:
                    block.steps.append(steps[i])
                    take(i)
            blocks.append(block)
        return prefix, blocks

    # -- costs ----------------------------------------------------------------------------------
    def cost(self, rows: int, *, gradient: bool, cached: bool = False) -> tuple[float, float]:
        """(fused, gate-by-gate) estimated cost of one call, in multiply-adds; ``cached``: the
        shared blocks' matrices exist for these angles."""
        dim = self.dim
        gate = GATE_PASS_COST * rows * dim * self.total_passes
        build = 0.0 if cached else GATE_PASS_COST * dim * dim * self.matrix_passes
        fused = build + rows * dim * (dim * self.matrix_blocks + GATE_PASS_COST * (self.row_passes + 4))
        if gradient:  # the sweep: the stack is twice the state; the products: M and the adjoint
            gate *= 3
            fused = 2 * build + GATE_PASS_COST * 2 * dim * dim * self.matrix_passes + rows * dim * (
                3 * dim * self.matrix_blocks + GATE_PASS_COST * (3 * self.row_passes + 10))
        return fused, gate

    def is_cached(self, values: torch.Tensor) -> bool:
        """Whether every shared block's matrix exists for the angles of ``values`` (row 0)."""
        half = self.compiled.angles(values[:1]).T / 2
        cos0, sin0 = torch.cos(half).reshape(-1, 1, 1), torch.sin(half).reshape(-1, 1, 1)
        return all(
            i in self._matrices and self._matrices[i][0] == self._key(b, cos0, sin0)
            for i, b in enumerate(self.blocks) if b.as_matrix
        )

    @staticmethod
    def _key(block: _Block, cos0, sin0) -> bytes:
        slots = [s.slot for s in block.steps if s.slot is not None]
        return np.concatenate([cos0[slots].numpy().ravel(), sin0[slots].numpy().ravel()]).tobytes()

    # -- forward --------------------------------------------------------------------------------
    def _tables(self, values: torch.Tensor):
        """cos/sin of every half angle: per row (A, rows, 1) and of row 0 (A, 1, 1)."""
        half = self.compiled.angles(values).T / 2
        rows = values.shape[0]
        cos, sin = torch.cos(half).reshape(-1, rows, 1), torch.sin(half).reshape(-1, rows, 1)
        return cos, sin, cos[:, :1], sin[:, :1]

    def _matrix(self, index: int, block: _Block, cos0, sin0) -> torch.Tensor:
        """``R = U^T`` of a shared block (rows of R are U e_i), cached while its angles stay."""
        key = self._key(block, cos0, sin0)
        hit = self._matrices.get(index)
        if hit is not None and hit[0] == key:
            return hit[1]
        basis = torch.eye(self.dim, dtype=self.dtype)
        matrix = apply_ops(basis, block.ops, cos0, sin0, self.n).to(self.work_dtype)
        self._matrices[index] = (key, matrix)
        return matrix

    def _prefix_layers(self) -> list[tuple]:
        """The prefix as layers (layer j holds the j-th gate of every qubit that has one), each as
        tensors that make all of its 2x2 matrices in three operations: ``G = A + c I' + s Q'``
        with ``A`` the fixed gates and ``I'``/``Q'`` non-zero for rotations only."""
        layers = []
        depth = max((len(chain) for chain in self.prefix), default=0)
        eye = np.eye(2)
        for j in range(depth):
            qubits = [q for q in range(self.n) if len(self.prefix[q]) > j]
            fixed, ident, gen, slots, is_rot = [], [], [], [], []
            for q in qubits:
                step = self.prefix[q][j]
                rot = step.slot is not None
                fixed.append(np.zeros((2, 2)) if rot else step.matrix)
                ident.append(eye if rot else np.zeros((2, 2)))
                gen.append(_LOCAL_Q[step.paulis[0]] if rot else np.zeros((2, 2)))
                slots.append(step.slot if rot else 0)
                is_rot.append(rot)
            as_local = lambda a: _cast(torch.as_tensor(np.array(a, dtype=complex)), self.local_dtype)  # noqa: E731
            layers.append((
                torch.tensor(qubits), len(qubits) == self.n, as_local(fixed), as_local(ident),
                as_local(gen), torch.tensor(slots), torch.tensor(is_rot),
            ))
        return layers

    def _layer_gates(self, layer, cos, sin) -> torch.Tensor:
        """The layer's 2x2 matrices per row: (rows, m, 2, 2)."""
        _, _, fixed, ident, gen, slots, _ = layer
        c = cos[slots, :, 0].T.to(self.local_dtype)[..., None, None]  # (rows, m, 1, 1)
        s = sin[slots, :, 0].T.to(self.local_dtype)[..., None, None]
        return fixed + c * ident + s * gen

    def _prefix_vectors(self, cos, sin, rows: int) -> list[torch.Tensor]:
        """Every qubit's 2-vector before and after each prefix layer, with the layer's gates:
        [((rows, n, 2), (rows, m, 2, 2) or None), ...]."""
        v = torch.zeros(rows, self.n, 2, dtype=self.local_dtype)
        v[..., 0] = 1
        chain = [(v, None)]
        for layer in self.layers:
            qubits, full = layer[0], layer[1]
            gates = self._layer_gates(layer, cos, sin)
            if full:
                v = torch.matmul(gates, v.unsqueeze(-1)).squeeze(-1)
            else:
                v = v.clone()
                v[:, qubits] = torch.matmul(gates, v[:, qubits].unsqueeze(-1)).squeeze(-1)
            chain.append((v, gates))
        return chain

    def _product_state(self, chains, rows: int) -> torch.Tensor:
        v = _cast(chains[-1][0], self.work_dtype)

        def kron(qubits) -> torch.Tensor:  # qubit n-1 is the most significant bit
            out = torch.ones(rows, 1, dtype=self.work_dtype)
            for q in reversed(qubits):
                out = (out.unsqueeze(-1) * v[:, q].unsqueeze(1)).reshape(rows, -1)
            return out

        # two halves, then one outer product: the large tensor is written once
        half = self.n // 2
        high, low = kron(range(half, self.n)), kron(range(half))
        return (high.unsqueeze(-1) * low.unsqueeze(1)).reshape(rows, -1)

    def _run(self, values: torch.Tensor, keep: bool):
        rows = values.shape[0]
        cos, sin, cos0, sin0 = self._tables(values)
        chains = self._prefix_vectors(cos, sin, rows)
        psi = self._product_state(chains, rows)
        boundaries = [psi] if keep else None
        for index, block in enumerate(self.blocks):
            if block.as_matrix:
                psi = psi @ self._matrix(index, block, cos0, sin0)
            else:
                c, s = (cos0, sin0) if block.shared else (cos, sin)
                state = psi.to(self.dtype) if psi.dtype != self.dtype else (psi.clone() if keep else psi)
                psi = apply_ops(state, block.ops, c, s, self.n).to(self.work_dtype)
            if keep:
                boundaries.append(psi)
        return chains, boundaries, psi, (cos, sin, cos0, sin0)

    def statevector(self, values: torch.Tensor) -> torch.Tensor:
        """Final states ``(rows, 2**n)`` in the compiled circuit's dtype.

        The run is kept until the next call: a training step's backward (:meth:`vjp`) on the
        same values then starts from it instead of simulating again.
        """
        values = self.compiled._check_values(values)
        with torch.inference_mode():
            run = self._run(values, keep=True)
            self._last_forward = (values.clone(), run)
            return run[2].to(self.dtype)

    # -- gradient -------------------------------------------------------------------------------
    def vjp(self, values: torch.Tensor, observables: CompiledObservables, cotangent):
        """``sum_k cotangent[r, k] dE_k / d values``: per row for the varying columns and summed
        over rows for the shared ones. Returns ``(per_row (rows, P), summed (P,))``; each is zero
        in the other's columns."""
        values = self.compiled._check_values(values)
        cotangent = torch.as_tensor(cotangent, dtype=torch.float64)
        rows = values.shape[0]
        with torch.inference_mode():
            last, self._last_forward = self._last_forward, None
            same = last is not None and last[0].shape == values.shape and torch.equal(last[0], values)
            run = last[1] if same else None
            chains, boundaries, psi, (cos, sin, cos0, sin0) = run or self._run(values, keep=True)
            if observables.offdiag:
                lam = observables.apply_weighted(psi.to(self.dtype), cotangent)[:, 0]
            else:  # diagonal observables: one weighted sign per amplitude, in the work dtype
                lam = psi * (cotangent @ observables._diag_t).to(self.work_dtype)
            angles = self.compiled.num_angles
            per_row = torch.zeros(angles, rows, dtype=torch.float64)
            summed = torch.zeros(angles, dtype=torch.float64)

            def record_rows(slot, g):
                per_row[slot] += g[:, 0]

            def record_sum(slot, g):
                summed[slot] += g.sum()

            for index in reversed(range(len(self.blocks))):
                block = self.blocks[index]
                phi_out = boundaries[index + 1]
                if block.as_matrix:
                    matrix = self._matrix(index, block, cos0, sin0)
                    lam_w = lam.to(self.work_dtype)
                    # M^dagger rows: lam'_i = sum_r conj(phi_r[i]) lam_r, paired with e_i
                    pairs = torch.matmul(phi_out.conj().T, lam_w).to(self.dtype)
                    stack = torch.stack((torch.eye(self.dim, dtype=self.dtype), pairs), dim=1)
                    undo_ops(stack, block.ops, cos0.unsqueeze(-1), sin0.unsqueeze(-1), self.n, record_sum)
                    lam = torch.matmul(lam_w, matrix.conj().T)
                else:
                    c, s = (cos0, sin0) if block.shared else (cos, sin)
                    stack = torch.stack((phi_out.to(self.dtype), lam.to(self.dtype)), dim=1)
                    stack = undo_ops(stack, block.ops, c.unsqueeze(-1), s.unsqueeze(-1), self.n,
                                     record_sum if block.shared else record_rows)
                    lam = stack[:, 1].contiguous()
            self._prefix_gradient(chains, lam, cos, sin, per_row, summed, rows)
            coeffs = self.compiled.angle_coeffs
            by_row = per_row.T @ coeffs  # (rows, P)
            total = summed @ coeffs
            shared = torch.from_numpy(self.shared)
            total = total + torch.where(shared, by_row.sum(0), torch.zeros(()))
            by_row[:, shared] = 0
            return by_row, total

    def _prefix_gradient(self, chains, lam, cos, sin, per_row, summed, rows) -> None:
        """Gradients of the prefix gates' angles from the adjoint state at the product state."""
        # contractions over the full state run in the work dtype, the 2-vectors in float64
        v_end = chains[-1][0].conj()
        v_work = _cast(v_end, lam.dtype) if lam.dtype != v_end.dtype else v_end
        top = lam
        tops = [None] * self.n
        for q in reversed(range(self.n)):  # contract qubits n-1 .. q+1 with conj(v)
            tops[q] = top
            if q > 0:
                halves = top.view(rows, 2, -1)
                top = halves[:, 0] * v_work[:, q, :1]
                top.addcmul_(halves[:, 1], v_work[:, q, 1:])
        # h[:, q] = sum over the other qubits of lam * prod_p conj(v_p): the adjoint 2-vector
        h = torch.empty(rows, self.n, 2, dtype=self.local_dtype)
        low = torch.ones(rows, 1, dtype=lam.dtype)
        for q in range(self.n):
            h[:, q] = torch.matmul(tops[q].view(rows, 2, -1), low.unsqueeze(-1)).squeeze(-1).to(self.local_dtype)
            if q < self.n - 1:
                low = (v_work[:, q].unsqueeze(-1) * low.unsqueeze(1)).reshape(rows, -1)
        row_slot = torch.from_numpy(self.row_slot)
        for j in reversed(range(len(self.layers))):
            layer = self.layers[j]
            qubits, full, _, _, gen, slots, is_rot = layer
            v, gates = chains[j + 1]
            v = v if full else v[:, qubits]
            hq = h if full else h[:, qubits]
            if bool(is_rot.any()):
                # dE/da = Re <h|Q v> with v and h just after the gate
                g = (hq.conj() * torch.matmul(gen, v.unsqueeze(-1)).squeeze(-1)).sum(-1).real  # (rows, m)
                g = g.to(torch.float64)
                rot_rows = is_rot & row_slot[slots]
                rot_shared = is_rot & ~row_slot[slots]
                if bool(rot_rows.any()):
                    per_row.index_add_(0, slots[rot_rows], g[:, rot_rows].T)
                if bool(rot_shared.any()):
                    summed.index_add_(0, slots[rot_shared], g[:, rot_shared].sum(0))
            undone = torch.matmul(gates.conj().transpose(-1, -2), hq.unsqueeze(-1)).squeeze(-1)
            if full:
                h = undone
            else:
                h = h.clone()
                h[:, qubits] = undone


def _kind(step: _Step) -> str:
    if step.slot is not None:
        return "rotation"
    return "monomial" if _monomial(step.matrix) is not None else "dense"


def _cast(tensor: torch.Tensor, dtype) -> torch.Tensor:
    return tensor.real.to(dtype) if not dtype.is_complex else tensor.to(dtype)


def fused_program(compiled: CompiledCircuit, shared: np.ndarray, precision: str = "float64") -> FusedProgram:
    """The (cached) fused program of ``compiled`` for this mask of shared columns."""
    cache = compiled.__dict__.setdefault("_fused_programs", {})
    key = (np.asarray(shared, dtype=bool).tobytes(), precision)
    program = cache.get(key)
    if program is None:
        program = FusedProgram(compiled, shared, precision)
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = program
    return program


def choose_path(compiled: CompiledCircuit, values: torch.Tensor, shared: np.ndarray, *,
                gradient: bool = False, fusion: str = "auto",
                precision: str = "float64") -> tuple[PathChoice, FusedProgram | None]:
    """Pick the fused or the gate-by-gate path for one call on ``values`` (rows, P) whose
    ``shared`` columns are equal in every row; ``fusion`` forces one path."""
    rows = values.shape[0]
    if fusion not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
    if fusion == "never":
        return PathChoice("gate-by-gate", "fusion='never'", float("nan"), float("nan")), None
    if compiled.num_qubits > MAX_FUSED_QUBITS:
        return PathChoice("gate-by-gate", f"more than {MAX_FUSED_QUBITS} qubits", float("nan"),
                          float("nan")), None
    program = fused_program(compiled, shared, precision)
    cached = program.is_cached(values)
    fused, gate = program.cost(rows, gradient=gradient, cached=cached)
    if fusion == "always":
        return PathChoice("fused", "fusion='always'", fused, gate), program
    if program.matrix_blocks == 0:
        return PathChoice("gate-by-gate", "no shared block worth a matrix", fused, gate), None
    if fused < gate:
        note = "cached matrices, " if cached else ""
        return PathChoice("fused", f"{note}estimated {gate / fused:.1f}x cheaper", fused, gate), program
    return PathChoice("gate-by-gate", f"fused estimated {fused / gate:.1f}x dearer", fused, gate), None
