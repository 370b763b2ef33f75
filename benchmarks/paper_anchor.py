"""The paper's own training step, re-implemented as a timing anchor (issue 26).

The code accompanying Keller, "Flow Equivariant Recurrent Neural Networks" (arXiv 2507.14793),
is the GitHub repository ``akandykeller/FERNN``. It has no licence, so nothing here is copied
from it: this module is written from a reading of it, and reproduces its *computational
structure* (which torch / escnn calls are made, how often, on which shapes), so that a step of
this module costs what a step of the paper's code costs. ``benchmarks.bench_fernn`` times the
library against it (``vs_reference_*``); the anchor itself was checked against the paper's code
in a scratch folder outside this repository (ratios in ``benchmarks/README.md``).

What each part mirrors (paper-code file and name, structure only):

* :class:`TranslationCell` mirrors ``FERNN_Cell`` in ``moving_mnist_fp/moving_mnist_models.py``:
  two ``torch.nn.Conv2d`` without bias and with ``padding_mode="circular"`` (``U`` on the frame,
  ``W`` on the state), no escnn; per step ``U`` on the ``[B, C_in, H, W]`` frame, the result
  ``unsqueeze``-d and ``expand``-ed over V (no copy); the state transported by a Python loop of
  ``torch.roll`` over the velocities ``(vx, vy)`` (``vx`` outer, ``vy`` inner, both in
  ``-r .. r``), one slice at a time, then ``torch.stack``-ed; ``W`` once on the
  ``[B * |V|, C, H, W]`` view; ``ReLU(u + w)``. The G-RNN of trivial fields is the same cell
  with ``r = 0`` (the paper's ``grnn`` option of ``moving_mnist_fp/train.py``): one
  ``torch.roll`` by zero per step.
* :class:`RotationCell` mirrors ``RotationFlowRNNCell`` (and ``build_rot_equivariant_conv``) in
  ``rotating_mnist_fp/rotating_mnist_models.py``: two escnn ``R2Conv`` (trivial -> C_N-regular
  and regular -> regular, ``padding = k // 2`` so zero padding inside ``conv2d``, no bias),
  called in training mode, so escnn expands both filters from their bases at every step; a
  ``GeometricTensor`` wrapped around each input. The transport of a slice by ``k`` degrees
  (``act_on_hidden``): a ``view`` splitting the channels into ``[fields, N]``, ``torch.roll`` of
  the orientation axis by ``k * N / 360``, a ``view`` back, then ``torch.rot90`` if ``k`` is a
  multiple of 90 (zero included: ``rot90`` by zero quarter turns, a copy) and otherwise a
  ``[2, 3]`` rotation matrix built with ``new_tensor``, ``expand``-ed over the batch,
  ``F.affine_grid`` and ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``),
  both recomputed at every call. The slices are transported one at a time in a Python loop
  over V and ``torch.stack``-ed, ``W`` runs once on the ``reshape``-d ``[B * |V|, C, H, W]``
  tensor, then ``ReLU(u + w)``. The C8 G-RNN is the same cell with ``V = {0}`` (the paper's
  ``grnn`` option of ``rotating_mnist_fp/train.py``, ``v_list = [0]``). The direction
  conventions are the paper's: rolling the orientation axis forward and rotating by ``+k``
  (``rot90`` by ``k / 90``, ``affine_grid`` with ``[[cos, -sin], [sin, cos]]``) equals escnn's
  ``GeometricTensor.transform`` by the rotation ``k`` for multiples of 90 degrees (tested).
* :class:`AnchorPredictor` mirrors ``Seq2SeqFERNN.forward`` (moving MNIST) and
  ``Seq2SeqRotationRNN.forward`` (rotating MNIST), whose structure is the same: the state
  starts as zeros ``[B, |V|, C, H, W]``; the cell reads the ``T_in`` input frames; then, for each
  of the ``T_out`` predictions, the cell reads the previous frame *detached* (first the last
  input frame again, then the previous prediction; teacher forcing ratio 0, the training
  scripts' default), the state is max-pooled over V (``max(1)[0]``) and decoded; the
  predictions are ``torch.stack``-ed. So ``T_in + T_out`` cell steps (20 for 10 + 10). The
  decoder is plain ``torch.nn.Conv2d`` layers without bias, ``decoder_layers`` of
  ``C -> C`` + ``ReLU`` then ``C -> C_in`` (``nn.Sequential``), with circular padding for
  translation models and zero padding for rotation models (as the two files do).
* :class:`AnchorStep` mirrors ``train_epoch`` in ``moving_mnist_fp/train_eval_utils.py`` and
  ``rotating_mnist_fp/train_eval_utils.py``: ``optimizer.zero_grad()``, forward, ``nn.MSELoss``
  over the predicted frames, ``backward``, for the translation models
  ``clip_grad_norm_(parameters, 1.0)`` (``moving_mnist_fp/train.py``'s default ``grad_clip``; the
  rotating MNIST step has no clipping), ``Adam.step`` (``lr`` 1e-3 / 1e-4 as the two ``train.py``),
  ``loss.item()``. Data loading, logging and wandb are not part of the step.

The rows of issue 26 (:func:`build_anchor`): ``"translation"`` (V = [-2, 2]^2, trivial fields),
``"rotation"`` (C8-regular fields, V = -90 .. 90 degrees in 45-degree steps), ``"grnn"`` (V = {0},
trivial fields) and ``"grnn_c8"`` (V = {0}, C8-regular fields); ``channels`` counts the state's
channels per V slice (32 = 32 trivial fields or 4 C8-regular fields).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from flow_escnn._compat import import_escnn

_escnn, _group, gspaces, enn = import_escnn()

__all__ = [
    "ANCHOR_ROWS",
    "TranslationCell",
    "RotationCell",
    "AnchorPredictor",
    "AnchorStep",
    "build_anchor",
    "translation_velocities",
    "rotation_degrees",
]

#: the anchor rows of issue 26
ANCHOR_ROWS = ("translation", "rotation", "grnn", "grnn_c8")


def translation_velocities(v_range: int) -> List[Tuple[int, int]]:
    """The velocities ``(vx, vy)`` of the square ``[-v_range, v_range]^2``, ``vx`` outer (the paper's order).

    Args:
        v_range: the largest speed along each axis, in pixels per frame.

    Returns:
        ``(2 * v_range + 1) ** 2`` pairs.
    """
    r = range(-v_range, v_range + 1)
    return [(vx, vy) for vx in r for vy in r]


def rotation_degrees(steps: Sequence[int], n: int = 8) -> List[float]:
    """Angular velocities in degrees per frame of rotation steps of :math:`C_n` (``k * 360 / n``).

    Args:
        steps: multiples of the group's generator, e.g. ``[-2, -1, 0, 1, 2]``.
        n: the order of the rotation group.

    Returns:
        One angle per step.
    """
    return [360.0 * k / n for k in steps]


class TranslationCell(torch.nn.Module):
    """One FERNN step over translation velocities with circular plain convolutions.

    Args:
        in_channels: channels of a frame.
        hidden_channels: channels of each V slice of the state.
        velocities: ``(vx, vy)`` per V slice, in pixels per frame.
        kernel_size: odd kernel size of ``U`` and ``W``.

    Shapes:
        ``forward(u [B, C_in, H, W], h [B, |V|, C, H, W])`` -> ``[B, |V|, C, H, W]``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, velocities: Sequence[Tuple[int, int]],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.velocities = [(int(vx), int(vy)) for vx, vy in velocities]
        self.num_v = len(self.velocities)
        self.hidden_channels = hidden_channels
        p = kernel_size // 2
        self.conv_u = torch.nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=p, padding_mode="circular",
                                      bias=False)
        self.conv_h = torch.nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=p, padding_mode="circular",
                                      bias=False)

    def transport(self, h: torch.Tensor) -> torch.Tensor:
        """Every slice of ``h [B, |V|, C, H, W]`` rolled by its velocity (a Python loop), stacked.

        Slice ``(vx, vy)`` moves ``vy`` pixels along the rows and ``vx`` along the columns.
        """
        return torch.stack([torch.roll(h[:, i], shifts=(vy, vx), dims=(2, 3))
                            for i, (vx, vy) in enumerate(self.velocities)], dim=1)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = u.shape
        u_term = self.conv_u(u).unsqueeze(1).expand(-1, self.num_v, -1, -1, -1)
        moved = self.transport(h)
        w_term = self.conv_h(moved.view(b * self.num_v, self.hidden_channels, hh, ww))
        return torch.relu(u_term + w_term.view(b, self.num_v, self.hidden_channels, hh, ww))


class RotationCell(torch.nn.Module):
    """One FERNN step over rotation velocities with escnn ``R2Conv`` (zero padding, re-expanded every call).

    Args:
        in_channels: trivial fields of a frame.
        fields: :math:`C_n`-regular fields of each V slice of the state (``fields * n`` channels).
        degrees: angular velocity per V slice, in degrees per frame (multiples of ``360 / n``).
        n: the order of the rotation group.
        kernel_size: odd kernel size of ``U`` and ``W``.

    Shapes:
        ``forward(u [B, C_in, H, W], h [B, |V|, fields * n, H, W])`` -> ``[B, |V|, fields * n, H, W]``.
    """

    def __init__(self, in_channels: int, fields: int, degrees: Sequence[float], n: int = 8,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.n = n
        self.degrees = [float(k) for k in degrees]
        for k in self.degrees:
            if not math.isclose(k * n / 360.0, round(k * n / 360.0), abs_tol=1e-9):
                raise ValueError(f"angle {k} is not a multiple of 360/{n} degrees")
        self.num_v = len(self.degrees)
        self.gspace = gspaces.rot2dOnR2(N=n)
        self.in_type = enn.FieldType(self.gspace, in_channels * [self.gspace.trivial_repr])
        self.hidden_type = enn.FieldType(self.gspace, fields * [self.gspace.regular_repr])
        self.hidden_channels = self.hidden_type.size
        p = kernel_size // 2
        self.conv_u = enn.R2Conv(self.in_type, self.hidden_type, kernel_size, padding=p, bias=False)
        self.conv_h = enn.R2Conv(self.hidden_type, self.hidden_type, kernel_size, padding=p, bias=False)

    def act(self, x: torch.Tensor, degrees: float) -> torch.Tensor:
        """Rotate one slice ``x [B, fields * n, H, W]`` by ``degrees``: fibers, then the grid.

        The orientation axis of every regular field is rolled by ``degrees * n / 360``; the grid is
        turned by ``rot90`` for multiples of 90 degrees, otherwise resampled bilinearly about its
        centre (``affine_grid`` + ``grid_sample``, zero padding, built at every call).
        """
        b, c, hh, ww = x.shape
        x = torch.roll(x.view(b, c // self.n, self.n, hh, ww), shifts=int(round(degrees * self.n / 360.0)), dims=2)
        x = x.view(b, c, hh, ww)
        if degrees % 90 == 0:
            return torch.rot90(x, int(degrees // 90), dims=(2, 3))
        a = math.radians(degrees)
        theta = x.new_tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = F.affine_grid(theta.unsqueeze(0).expand(b, -1, -1), x.size(), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def transport(self, h: torch.Tensor) -> torch.Tensor:
        """Every slice of ``h [B, |V|, C, H, W]`` rotated by its angle (a Python loop), stacked."""
        return torch.stack([self.act(h[:, i], k) for i, k in enumerate(self.degrees)], dim=1)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = u.shape
        u_term = self.conv_u(enn.GeometricTensor(u, self.in_type)).tensor
        u_term = u_term.unsqueeze(1).expand(-1, self.num_v, -1, -1, -1)
        moved = self.transport(h).reshape(b * self.num_v, self.hidden_channels, hh, ww)
        w_term = self.conv_h(enn.GeometricTensor(moved, self.hidden_type)).tensor
        return torch.relu(u_term + w_term.view(b, self.num_v, self.hidden_channels, hh, ww))


class AnchorPredictor(torch.nn.Module):
    """Sequence-to-sequence predictor: the cell over the inputs, then over detached previous frames.

    Args:
        cell: a :class:`TranslationCell` or :class:`RotationCell`.
        out_channels: channels of a predicted frame.
        decoder_layers: hidden ``conv + ReLU`` layers before the last conv.
        padding_mode: the decoder convs' padding (``"circular"`` for translations, ``"zeros"`` for rotations).
        kernel_size: the decoder convs' kernel size.

    Shapes:
        ``forward(x [B, T_in, C_in, H, W], pred_len)`` -> ``[B, pred_len, out_channels, H, W]``.
    """

    def __init__(self, cell: torch.nn.Module, out_channels: int, decoder_layers: int = 1,
                 padding_mode: str = "circular", kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = cell
        c, p = cell.hidden_channels, kernel_size // 2
        layers: List[torch.nn.Module] = []
        for _ in range(decoder_layers):
            layers += [torch.nn.Conv2d(c, c, kernel_size, padding=p, padding_mode=padding_mode, bias=False),
                       torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(c, out_channels, kernel_size, padding=p, padding_mode=padding_mode, bias=False))
        self.decoder = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, pred_len: int) -> torch.Tensor:
        b, t_in, _, hh, ww = x.shape
        h = torch.zeros(b, self.cell.num_v, self.cell.hidden_channels, hh, ww, device=x.device, dtype=x.dtype)
        for t in range(t_in):
            h = self.cell(x[:, t], h)
        prev = x[:, -1]
        outputs = []
        for _ in range(pred_len):
            h = self.cell(prev.detach(), h)
            out = self.decoder(h.max(1)[0])
            outputs.append(out)
            prev = out
        return torch.stack(outputs, dim=1)


def build_anchor(row: str, channels: int = 32, in_channels: int = 1, decoder_layers: int = 1, n: int = 8,
                 v_range: int = 2, rotation_steps: Sequence[int] = (-2, -1, 0, 1, 2)) -> AnchorPredictor:
    """The anchor model of a row of issue 26.

    Args:
        row: one of :data:`ANCHOR_ROWS`.
        channels: the state's channels per V slice (a multiple of ``n`` for the C_n rows).
        in_channels: channels of a frame.
        decoder_layers: hidden decoder layers.
        n: the rotation group order of the C_n rows.
        v_range: the translation row's ``V = [-v_range, v_range]^2``.
        rotation_steps: the rotation row's V, in steps of ``360 / n`` degrees.

    Returns:
        The predictor (parameters initialised from torch's global generator).
    """
    if row in ("translation", "grnn"):
        cell: torch.nn.Module = TranslationCell(in_channels, channels,
                                                translation_velocities(v_range if row == "translation" else 0))
        return AnchorPredictor(cell, in_channels, decoder_layers, padding_mode="circular")
    if row in ("rotation", "grnn_c8"):
        if channels % n:
            raise ValueError(f"channels must be a multiple of {n} (C{n}-regular fields), got {channels}")
        degrees = rotation_degrees(rotation_steps if row == "rotation" else [0], n)
        cell = RotationCell(in_channels, channels // n, degrees, n=n)
        return AnchorPredictor(cell, in_channels, decoder_layers, padding_mode="zeros")
    raise ValueError(f"unknown anchor row {row!r}; expected one of {ANCHOR_ROWS}")


class AnchorStep:
    """One training step of an anchor model, structured as the paper's ``train_epoch``.

    Args:
        model: an :class:`AnchorPredictor`.
        x: input frames ``[B, T_in, C, H, W]``.
        y: target frames ``[B, T_out, C, H, W]``.
        grad_clip: ``clip_grad_norm_`` threshold (``None``: no clipping); default: 1.0 for
            translation cells, none for rotation cells (the two training scripts' defaults).
        lr: Adam's learning rate; default 1e-3 for translation cells, 1e-4 for rotation cells.
    """

    def __init__(self, model: AnchorPredictor, x: torch.Tensor, y: torch.Tensor, grad_clip: object = "default",
                 lr: object = None) -> None:
        translation = isinstance(model.cell, TranslationCell)
        self.model, self.x, self.y = model, x, y
        model.train()  # once, as the paper's train_epoch; escnn then re-expands the filters at every call
        self.grad_clip = (1.0 if translation else None) if grad_clip == "default" else grad_clip
        self.opt = torch.optim.Adam(model.parameters(), lr=float(lr if lr is not None else (1e-3 if translation else 1e-4)))
        self.criterion = torch.nn.MSELoss()
        self.losses: List[float] = []

    def __call__(self) -> None:
        self.opt.zero_grad()
        pred = self.model(self.x, self.y.shape[1])
        loss = self.criterion(pred, self.y)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.losses.append(loss.item())
