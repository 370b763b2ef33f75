"""The next-frame predictor as plain torch: the decoder and :class:`PredictorProgram`.

:class:`~flow_escnn.models._predictor.NextFramePredictor` (freshly expanded weights) and
:class:`~flow_escnn.models._predictor.ExportedNextFramePredictor` (frozen ones) both run a
:class:`PredictorProgram`: the encoder's engine program (:mod:`flow_escnn.nn._engine`), the
pooling over :math:`V` and the decoder, with no escnn object inside, so it is also what
``torch.compile`` sees (:meth:`~flow_escnn.models._predictor.NextFramePredictor.compile_engine`).
:class:`ProgramCache` keeps a model's programs (one per compiled recurrence), eager or compiled;
the predictor and the classifier both use it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch

from flow_escnn.flows._gather import CircularPad
from flow_escnn.nn._conv import SteerableConv
from flow_escnn.nn._engine import Recurrence, Weights
from flow_escnn.nn._kernels import conv, conv_same

__all__ = [
    "ProgramCache",
    "PredictorProgram",
    "OUTPUT_ACTIVATIONS",
    "output_activation",
    "build_decoder",
    "decoder_weights",
    "run_decoder",
]

OUTPUT_ACTIVATIONS = ("identity", "clamp", "sigmoid")


class ProgramCache:
    """A model's plain-torch programs, one per engine program (:class:`~flow_escnn.nn._engine.Recurrence`),
    each with what runs it: the program itself, or its ``torch.compile`` form after :meth:`compile`."""

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[torch.nn.Module, Callable[..., torch.Tensor]]] = {}
        self.options: Optional[Dict[str, Any]] = None

    def use_torch_compile(self, **options: Any) -> None:
        """From now on, run programs through ``torch.compile(program, **options)`` (built afresh)."""
        self.options = dict(options)
        self._entries.clear()

    def get(
        self, recurrence: Recurrence, build: Callable[[], torch.nn.Module]
    ) -> Tuple[torch.nn.Module, Callable[..., torch.Tensor]]:
        """``(program, run)`` around ``recurrence``; ``build()`` makes the program on a miss."""
        entry = self._entries.get(id(recurrence))
        if entry is None or entry[0].recurrence is not recurrence:
            program = build()
            run = program if self.options is None else torch.compile(program, **self.options)
            entry = self._entries[id(recurrence)] = (program, run)
        return entry


def output_activation(z: torch.Tensor, name: str) -> torch.Tensor:
    """The pointwise map on the decoder's output: ``"identity"``, ``"clamp"`` to [0, 1] or ``"sigmoid"``.

    A pointwise map commutes with transports of permutation-type fields, so it keeps the
    predictions equivariant; ``"clamp"`` bounds what is fed back for frames in [0, 1].
    """
    if name == "clamp":
        return z.clamp(0.0, 1.0)
    if name == "sigmoid":
        return torch.sigmoid(z)
    return z


def build_decoder(
    hidden_type: Any, in_type: Any, layers: int, decoder_type: Any, kernel_size: int, bias: bool, padding_mode: str
) -> torch.nn.ModuleList:
    """The steerable decoder: ``layers`` convs ``-> decoder_type`` (each followed by ReLU), then one to ``in_type``."""
    types_ = [hidden_type] + [decoder_type] * layers + [in_type]
    return torch.nn.ModuleList(
        [SteerableConv(a, b, kernel_size, bias=bias, padding_mode=padding_mode) for a, b in zip(types_[:-1], types_[1:])]
    )


def decoder_weights(decoder: torch.nn.ModuleList) -> Weights:
    """The decoder's expanded filters under the program's names (``dec{i}_weight`` / ``dec{i}_bias``)."""
    out: Weights = {}
    for i, layer in enumerate(decoder):
        out[f"dec{i}_weight"], out[f"dec{i}_bias"] = layer.expand()
    return out


def run_decoder(
    z: torch.Tensor, weights: Weights, layers: int, padding_mode: str, activation: str,
    pad: Optional[CircularPad] = None, padded: bool = False,
) -> torch.Tensor:
    """Apply the :func:`build_decoder` stack to ``[N, C, H, W]`` (or ``[N, C, D, H, W]``) with expanded weights
    (:func:`decoder_weights`).

    ``padded=True``: ``z`` is already circularly padded for the first convolution.
    """
    for i in range(layers):
        w, b = weights[f"dec{i}_weight"], weights.get(f"dec{i}_bias")
        z = conv(z, w, b) if (i == 0 and padded) else conv_same(z, w, b, padding_mode, pad)
        if i < layers - 1:
            z = torch.relu(z)
    return output_activation(z, activation)


class PredictorProgram(torch.nn.Module):
    """The predictor as plain torch: the encoder's engine program plus the decoder (no weights inside).

    ``forward(weights, x, num_predictions, include_one_step)`` is what both
    :class:`NextFramePredictor` (with freshly expanded weights) and
    :class:`ExportedNextFramePredictor` (with frozen ones) run.
    """

    def __init__(
        self, recurrence: Recurrence, decoder_layers: int, padding_mode: str, pool: str, activation: str,
        checkpoint: bool = False, decoder_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.recurrence = recurrence
        self.decoder_pad = CircularPad(recurrence.grid_shape, decoder_kernel_size // 2)
        self.decoder_layers = int(decoder_layers)
        self.padding_mode = padding_mode
        self.pool = pool
        self.activation = activation
        self.checkpoint = bool(checkpoint)

    def decode(self, weights: Weights, z: torch.Tensor) -> torch.Tensor:
        """``Dec`` on ``[N, C, *grid]``, or on ``[N, C, *(grid + 2p)]`` already padded for its first conv."""
        grid = self.recurrence.grid_shape
        w = grid[-1]
        padded = z.shape[-1] != w and self.padding_mode == "circular" and z.shape[-1] == w + 2 * self.decoder_pad.pad
        if z.shape[-1] != w and not padded:  # padded for another kernel size: take the grid
            p = (z.shape[-1] - w) // 2
            z = z[(..., *(slice(p, p + n) for n in grid))]
        return run_decoder(z, weights, self.decoder_layers, self.padding_mode, self.activation, self.decoder_pad, padded)

    def forward(
        self, weights: Weights, x: torch.Tensor, num_predictions: int = 1, include_one_step: bool = False
    ) -> torch.Tensor:
        t_in = x.shape[1]
        pool = self.pool

        def predict(s: int, pooled: torch.Tensor) -> torch.Tensor:
            return pooled if s < t_in else self.decode(weights, pooled)  # one-step guesses are decoded in one batch

        res = self.recurrence.run(
            x, weights, keep_outputs=False, predict=predict, predict_from=1 if include_one_step else t_in,
            extra_steps=num_predictions - 1, checkpoint=self.checkpoint, readout_pool=pool,
        )
        preds = res.predictions
        n_one = len(preds) - num_predictions
        out = torch.stack(preds[n_one:], dim=1)
        if n_one == 0:
            return out
        pooled = torch.stack(preds[:n_one], dim=1)
        b, t = pooled.shape[:2]
        one = self.decode(weights, pooled.reshape(b * t, *pooled.shape[2:]))
        return torch.cat([one.reshape(b, t, *one.shape[1:]), out], dim=1)
