"""A plain PyTorch batched-statevector implementation of the benchmark circuit.

Written independently of qhybrid as the speed reference: angle encoding RY(x_i), then
``real_amplitudes`` (RY layers and a reverse-linear CX ladder), Z on each qubit, autograd for
gradients. Qubit q is bit q of the basis index (Qiskit's convention).
"""

from __future__ import annotations

import torch


def _ry(state: torch.Tensor, q: int, n: int, theta: torch.Tensor) -> torch.Tensor:
    b = state.shape[0]
    s = state.view(b, 2 ** (n - q - 1), 2, 2**q)
    c = torch.cos(theta / 2).view(-1, 1, 1)
    si = torch.sin(theta / 2).view(-1, 1, 1)
    a0, a1 = s[:, :, 0, :], s[:, :, 1, :]
    return torch.stack((c * a0 - si * a1, si * a0 + c * a1), dim=2).reshape(b, -1)


def _cx_perm(control: int, target: int, n: int) -> torch.Tensor:
    idx = torch.arange(2**n)
    return torch.where(((idx >> control) & 1) == 1, idx ^ (1 << target), idx)


class TorchReferenceCircuit(torch.nn.Module):
    """RY(x) encoding + real_amplitudes(reps, 'reverse_linear') + <Z_q> for each qubit."""

    def __init__(self, num_qubits: int, reps: int):
        super().__init__()
        self.n, self.reps = num_qubits, reps
        self.weight = torch.nn.Parameter(torch.rand((reps + 1) * num_qubits, dtype=torch.float64))
        n = num_qubits
        # reverse_linear: CX(n-2, n-1), ..., CX(0, 1), composed into one permutation
        perm = torch.arange(2**n)
        for c in reversed(range(n - 1)):
            perm = perm[_cx_perm(c, c + 1, n)]
        self.register_buffer("perm", perm)
        idx = torch.arange(2**n)
        self.register_buffer("z", torch.stack([1 - 2 * ((idx >> q) & 1) for q in range(n)], 1).double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = self.n, x.shape[0]
        state = torch.zeros(b, 2**n, dtype=torch.float64)
        state[:, 0] = 1
        for q in range(n):
            state = _ry(state, q, n, x[:, q])
        w = self.weight.view(self.reps + 1, n)
        for r in range(self.reps + 1):
            for q in range(n):
                state = _ry(state, q, n, w[r, q].expand(b))
            if r < self.reps:
                state = state[:, self.perm]
        return (state * state) @ self.z


class TorchFusedReference(TorchReferenceCircuit):
    """The same circuit fused the other way the issue asked to measure: autograd through the
    unitary's construction. The encoding and the first weight layer give a product state
    (RY(x_q) RY(w_q)|0> = RY(x_q + w_q)|0>); the remaining weight layers are built as one matrix by
    applying them to the 2**n basis states with ordinary differentiable tensor ops; the batch is
    one product with it, and PyTorch's autograd differentiates through all of it."""

    def unitary_rows(self) -> torch.Tensor:
        """Rows are U e_i (the CX ladders and RY layers after the first), so psi_out = psi @ rows."""
        n, dim = self.n, 2**self.n
        w = self.weight.view(self.reps + 1, n)
        rows = torch.eye(dim, dtype=torch.float64)
        for r in range(1, self.reps + 1):
            rows = rows[:, self.perm]
            for q in range(n):
                rows = _ry(rows, q, n, w[r, q].expand(dim))
        return rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = self.n, x.shape[0]
        half = (x + self.weight[:n]) / 2
        v = torch.stack((torch.cos(half), torch.sin(half)), dim=-1)  # (b, n, 2)
        psi = torch.ones(b, 1, dtype=torch.float64)
        for q in reversed(range(n)):  # qubit n-1 is the most significant bit
            psi = (psi.unsqueeze(-1) * v[:, q].unsqueeze(1)).reshape(b, -1)
        out = psi @ self.unitary_rows()
        return (out * out) @ self.z
