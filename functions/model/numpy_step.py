"""``FraudGRU.step`` computed with numpy, for the scorer's small batches.

``FraudGRU.step`` stays the definition (training, the parity tests and large batches use it). This is the same
function exported once from its weights, like the TorchScript form in ``package.compile_step``, and the tests hold
it to the torch step within float32 noise. It exists because of what a step costs at the batches the scorer sees
when it is not saturated: a lone event's step dispatches ~15 torch ops of a few microseconds each, where a numpy
op on a 64-wide row costs about one. In-process, a lone event cost 494-568 µs of CPU against 621-685 with the torch
step (three alternated pairs); at 64 events per batch both cost 44 µs per event, so larger batches keep torch.

The two cells are fused: one matrix maps ``[event | card numeric | merchant numeric]`` to both cells' input gates
and one block-diagonal matrix maps ``[card state | merchant state]`` to both cells' hidden gates, so the gate
arithmetic runs once over both entities instead of once per cell. The zero blocks cost flops that do not matter at
these batch sizes, and adding an exact zero changes no sum.
"""

from __future__ import annotations

import numpy as np
import torch

from functions.model.features import FeatureArrays, Features
from functions.model.gru import FraudGRU, StepArrays, StepResult

# torch.nn.GRUCell stacks its gate weights in this order, each block ``hidden_size`` rows.
_TORCH_GATES = ("r", "z", "n")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function through tanh: exact to float32 noise, and no overflow warning for large |x|."""
    out = np.tanh(x * 0.5)
    out *= 0.5
    out += 0.5
    return out


class NumpyStep:
    """Callable like ``FraudGRU.step``: ``(card_states, merchant_states, features) -> StepResult``; ``arrays`` is the
    same on numpy arrays."""

    def __init__(self, model: FraudGRU) -> None:
        params = {name: t.detach().to(torch.float32).numpy().copy() for name, t in model.state_dict().items()}
        spec = model.spec
        h, e, k = spec.hidden_size, spec.event_width, len(spec.entity_numeric)
        self.hidden_size = h
        self._channel_rows = np.eye(model.encoder.channels, dtype=np.float32)
        self._mcc_rows, self._country_rows = params["encoder.mcc.weight"], params["encoder.country.weight"]
        # Fused gate columns: [r card | r merchant | z card | z merchant | n card | n merchant], so that r and z line
        # up with [card state | merchant state] and the update is one expression over both.
        self._w_in = np.zeros((e + 2 * k, 6 * h), np.float32)
        self._w_hidden = np.zeros((2 * h, 6 * h), np.float32)
        self._b_in = np.zeros(6 * h, np.float32)
        self._b_hidden = np.zeros(6 * h, np.float32)
        for side, cell in enumerate(("card_cell", "merchant_cell")):
            w_ih, w_hh = params[f"{cell}.weight_ih"], params[f"{cell}.weight_hh"]
            b_ih, b_hh = params[f"{cell}.bias_ih"], params[f"{cell}.bias_hh"]
            numeric = slice(e + side * k, e + (side + 1) * k)
            for gate_index, _gate in enumerate(_TORCH_GATES):
                rows = slice(gate_index * h, (gate_index + 1) * h)
                cols = slice((2 * gate_index + side) * h, (2 * gate_index + side + 1) * h)
                self._w_in[:e, cols] = w_ih[rows, :e].T
                self._w_in[numeric, cols] = w_ih[rows, e:].T
                self._w_hidden[side * h : (side + 1) * h, cols] = w_hh[rows].T
                self._b_in[cols], self._b_hidden[cols] = b_ih[rows], b_hh[rows]
        self._w_head = params["head.0.weight"].T.copy()
        self._b_head = params["head.0.bias"]
        self._w_out = params["head.2.weight"][0].copy()
        self._b_out = float(params["head.2.bias"][0])

    def __call__(self, card_states: torch.Tensor, merchant_states: torch.Tensor, features: Features) -> StepResult:
        result = self.arrays(card_states.numpy(), merchant_states.numpy(), FeatureArrays.of(features))
        return StepResult(*(torch.from_numpy(a) for a in result))

    def arrays(self, card_states: np.ndarray, merchant_states: np.ndarray, features: FeatureArrays) -> StepArrays:
        """The step on numpy arrays in and out: the scorer's small batches pass no tensor at all (about twenty
        conversions a lone event would otherwise make)."""
        h = self.hidden_size
        event = np.concatenate([
            features.event_numeric,
            self._channel_rows[features.channel],
            self._mcc_rows[features.mcc],
            self._country_rows[features.country],
        ], axis=1)
        inputs = np.concatenate([event, features.card_numeric, features.merchant_numeric], axis=1)
        states = np.concatenate([card_states, merchant_states], axis=1)
        gates_in = inputs @ self._w_in
        gates_in += self._b_in
        gates_hidden = states @ self._w_hidden
        gates_hidden += self._b_hidden
        reset_update = _sigmoid(gates_in[:, : 4 * h] + gates_hidden[:, : 4 * h])
        candidate = np.tanh(gates_in[:, 4 * h :] + reset_update[:, : 2 * h] * gates_hidden[:, 4 * h :])
        # (1 - z) * n + z * h, as torch's cell computes it, with one temporary fewer
        new_states = candidate + reset_update[:, 2 * h :] * (states - candidate)
        head = np.concatenate([new_states, event], axis=1) @ self._w_head
        head += self._b_head
        np.maximum(head, 0.0, out=head)
        logits = head @ self._w_out
        logits += self._b_out
        return StepArrays(
            card_states=np.ascontiguousarray(new_states[:, :h]),
            merchant_states=np.ascontiguousarray(new_states[:, h:]),
            scores=_sigmoid(logits),
            logits=logits,
        )
