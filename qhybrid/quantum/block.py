"""QuantumBlock: the trainable circuit as a PyTorch module, built from Qiskit objects.

``QuantumBlock(spec)`` holds ``QNNConnector(EstimatorQNN(...))`` (a ``TorchConnector`` subclass). Its only trainable state is
``.weight`` (one entry per weight parameter of ``.circuit``, in circuit order), so a checkpoint
stores plain numbers and never a primitive or a backend: ``to_target`` swaps how the circuit is
evaluated while keeping the very same ``nn.Parameter``. ``.pub_circuit`` is the circuit object
the QNN actually sends to its estimator (what estimator caches, ISA programs and job records are
keyed on).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from qiskit.circuit import QuantumCircuit
from qiskit_machine_learning.connectors import TorchConnector
from torch import nn

from qhybrid.quantum.circuits import CircuitSpec, build_circuit, build_observables
from qhybrid.quantum.targets import Target, parse_target, qnn_pub_circuit


class _QNNFunction(torch.autograd.Function):
    """Autograd bridge used by :class:`QNNConnector` (see there for why)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weights: torch.Tensor, connector: "QNNConnector"):
        qnn = connector.neural_network
        out = qnn.forward(inputs.detach().cpu().double().numpy(), weights.detach().cpu().double().numpy())
        ctx.connector = connector
        ctx.save_for_backward(inputs, weights)
        return torch.as_tensor(np.asarray(out), dtype=inputs.dtype, device=inputs.device)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        inputs, weights = ctx.saved_tensors
        connector: QNNConnector = ctx.connector
        qnn = connector.neural_network
        x = inputs.detach().cpu().double().numpy()
        w = weights.detach().cpu().double().numpy()
        g = grad_output.detach().cpu().double().numpy()
        shared_vjp = getattr(qnn.gradient, "shared_vjp", None)
        if shared_vjp is not None and connector.circuit is not None:
            values = np.concatenate([x, np.broadcast_to(w, (x.shape[0], w.shape[0]))], axis=1)
            is_weight = np.arange(values.shape[1]) >= x.shape[1]  # the same in every row
            per_row, summed = shared_vjp(connector.circuit, qnn.observables, values, g, is_weight)
            grad_x, grad_w = per_row[:, : x.shape[1]], summed[x.shape[1] :]
        else:  # any other gradient: the full Jacobian, contracted here
            jac_x, jac_w = qnn.backward(x, w)
            grad_x = np.einsum("bk,bki->bi", g, jac_x)
            grad_w = np.einsum("bk,bkw->w", g, jac_w)
        return (
            torch.as_tensor(grad_x, dtype=inputs.dtype, device=inputs.device),
            torch.as_tensor(grad_w, dtype=weights.dtype, device=weights.device),
            None,
        )


def _drop_weight_aliases(module: QNNConnector, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: keep the weight once, under ``weight``."""
    for name in module.weight_aliases:
        state_dict.pop(prefix + name, None)


def _restore_weight_aliases(module: QNNConnector, state_dict, prefix, local_metadata, strict,
                            missing_keys, unexpected_keys, error_msgs) -> None:
    """Load-state-dict pre-hook: the aliases load from the saved ``weight``."""
    if prefix + "weight" in state_dict:
        for name in module.weight_aliases:
            state_dict.setdefault(prefix + name, state_dict[prefix + "weight"])


class QNNConnector(TorchConnector):
    """``TorchConnector`` with two changes that matter for training:

    * outputs keep the input's dtype (float64 in, float64 out) instead of always float32, so
      ``torch.autograd.gradcheck`` can check the block in double precision;
    * when the QNN's gradient offers ``shared_vjp`` (qhybrid's exact gradient does), backward asks
      for the cotangent-weighted gradient directly, with the weights' part summed over the batch.
      ``NeuralNetwork.backward`` must return the full Jacobian, (batch, outputs, parameters), which
      costs one adjoint pass per output; a VJP costs one. Other gradients (noisy and hardware targets) use ``qnn.backward`` as TorchConnector does.

    ``circuit`` must be the circuit the QNN sends (:func:`~qhybrid.quantum.targets.qnn_pub_circuit`,
    parameters in inputs-then-weights order), so the VJP reuses the forward pass's compiled form.
    ``weight``, if given, is used as the connector's parameter itself (not copied), so optimisers
    and EMA copies that hold it keep working when the block moves to another target.
    """

    def __init__(self, neural_network, initial_weights=None, circuit=None, weight: nn.Parameter | None = None):
        if weight is not None:  # the values, so TorchConnector draws no random initial weights
            initial_weights = weight.detach().cpu().numpy()
        super().__init__(neural_network, initial_weights=initial_weights)
        self.circuit = circuit
        # TorchConnector registers its weight under 'weight' and again under a private alias. The
        # aliases are found through the public registry rather than by name; they are left out of
        # state dicts (checkpoints hold each tensor once, under 'weight') and restored on load.
        own = self.weight
        self.weight_aliases = tuple(
            name for name, p in self.named_parameters(recurse=False, remove_duplicate=False)
            if p is own and name != "weight"
        )
        if weight is not None:
            for name in ("weight", *self.weight_aliases):
                self.register_parameter(name, weight)
        self.register_state_dict_post_hook(_drop_weight_aliases)
        self.register_load_state_dict_pre_hook(_restore_weight_aliases)

    def forward(self, input_data: torch.Tensor | None = None) -> torch.Tensor:
        return _QNNFunction.apply(input_data, self.weight, self)


class QuantumBlock(nn.Module):
    """Map ``(batch, num_qubits)`` angles to ``(batch, num_observables)`` expectation values.

    Args:
        spec: the circuit description.
        target: ``"ideal"`` (default), ``"fake:<backend>"`` or ``"ibm:<backend>"``.
        initial_weights: optional tensor of ``spec.num_weights`` values.
        seed: seeds the default initialisation (uniform in [-pi, pi] scaled by ``init_scale``).
        init_scale: spread of the default initialisation.

    Outputs have the input's dtype; the weights are float32 unless the block is converted with
    ``.double()``.
    """

    def __init__(
        self,
        spec: CircuitSpec,
        target: "str | Target" = "ideal",
        *,
        initial_weights: torch.Tensor | None = None,
        seed: int | None = None,
        init_scale: float = 1.0,
        **target_options,
    ):
        super().__init__()
        if not isinstance(spec, CircuitSpec):
            raise TypeError(f"QuantumBlock needs a CircuitSpec, got {type(spec).__name__}")
        self.spec = spec
        self.circuit, self.input_params, self.weight_params = build_circuit(spec)
        self.observables = build_observables(spec)
        self.target = parse_target(target, **target_options)
        self.qnn = self.target.make_qnn(
            self.circuit, self.observables, self.input_params, self.weight_params
        )
        if initial_weights is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            initial_weights = (
                torch.rand(len(self.weight_params), generator=generator) * 2 - 1
            ) * (math.pi * init_scale)
        else:
            initial_weights = torch.as_tensor(initial_weights, dtype=torch.float32).flatten()
            if initial_weights.numel() != len(self.weight_params):
                raise ValueError(
                    f"QuantumBlock initial_weights has {initial_weights.numel()} values, the "
                    f"circuit has {len(self.weight_params)} weight parameters"
                )
        self.connector = QNNConnector(
            self.qnn, initial_weights=initial_weights.detach().numpy(), circuit=self.pub_circuit
        )

    @property
    def weight(self) -> nn.Parameter:
        """The trainable circuit parameters (``len == spec.num_weights``)."""
        return self.connector.weight

    @property
    def pub_circuit(self) -> QuantumCircuit:
        """The circuit object the QNN puts in every PUB and gradient call.

        Not ``.circuit``: ``EstimatorQNN`` sends a reparameterised copy of it (same gates, same
        parameter names, new ``Parameter`` objects), and ``EstimatorQNN.circuit`` hands out yet
        another copy of the original on every call. The estimators cache per circuit object, so
        code that talks to the QNN's estimator directly (pre-transpiling, job records, checking
        results) needs this object. Changes with :meth:`to_target`.
        """
        return qnn_pub_circuit(self.qnn)

    @property
    def num_inputs(self) -> int:
        return self.spec.num_inputs

    @property
    def num_outputs(self) -> int:
        return self.spec.num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"QuantumBlock input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.spec.num_inputs:
            raise ValueError(
                f"QuantumBlock input must have shape (batch, {self.spec.num_inputs}) "
                f"(one angle per qubit), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("QuantumBlock input contains NaN or infinite values")
        return self.connector(x)

    def to_target(self, target: "str | Target", **options) -> "QuantumBlock":
        """Evaluate the same weights on another target (in place; returns ``self``)."""
        parsed = parse_target(target, **options)
        qnn = parsed.make_qnn(self.circuit, self.observables, self.input_params, self.weight_params)
        # the very same Parameter object, so optimisers and EMA copies still point at it
        self.connector = QNNConnector(qnn, circuit=qnn_pub_circuit(qnn), weight=self.connector.weight)
        self.qnn = qnn
        self.target = parsed
        return self

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"qubits={s.num_qubits}, ansatz={s.ansatz}, reps={s.reps}, encoding={s.encoding}, "
            f"entanglement={s.entanglement}, outputs={s.num_outputs}, "
            f"weights={len(self.weight_params)}, target={self.target}"
        )
