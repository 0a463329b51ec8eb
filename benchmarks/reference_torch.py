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
