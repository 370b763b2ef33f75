"""Steerable convolution with periodic padding and an expand-once API.

:class:`SteerableConv` *composes* escnn's ``R2Conv`` (it does not subclass it) and adds
what a recurrent layer needs. On escnn's 3D gspaces (``gspace.dimensionality == 3``:
``octaOnR3``, ``rot2dOnR3(4)``, ...) it composes ``R3Conv`` instead and everything below holds
for volumes ``[N, C, D, H, W]`` and filters ``[C_out, C_in, k, k, k]`` (``export()`` gives a
``torch.nn.Conv3d``; :attr:`SteerableConv.dimensionality` says which):

* ``expand()`` returns the dense filter and bias once, and ``apply()`` convolves with
  them, so a recurrence expands its steerable filter once per sequence, not once per
  time step;
* periodic (``"circular"``) padding by default, the setting under which translations
  of the torus commute exactly with the convolution;
* a ``state_dict`` that does not depend on train/eval mode (escnn's ``R2Conv`` adds
  ``filter``/``expanded_bias`` buffers in eval mode; here the inner ``R2Conv`` is kept
  in its training state and the filter is expanded explicitly instead);
* ``export()`` to a plain ``torch.nn.Conv2d`` / ``Conv3d`` that keeps ``padding_mode``
  (escnn's own ``R2Conv.export()`` and ``R3Conv.export()`` silently turn circular padding
  into zero padding);
* an expanded filter that is *exactly* equivariant (to the dtype's rounding) under the
  grid-preserving fiber elements, see below.

Exact equivariance of the expanded filter
-----------------------------------------
escnn samples its steerable kernel basis at grid points given as ``float32``
(``escnn/nn/modules/basismanager/basisexpansion_singleblock.py``), so the basis, and
every filter expanded from it, carries float32 rounding even after ``.double()``: the
constraint :math:`\\kappa(A(g) y) = \\rho_{\\text{out}}(g)\\kappa(y)\\rho_{\\text{in}}(g)^{-1}`
holds only to about ``1e-7`` relative, which a float64 recurrence then carries into its
outputs (about ``1e-6`` for static C4 checks). :meth:`SteerableConv.expand` therefore
projects the expanded filter onto the equivariant subspace of the subgroup
:math:`H \\subseteq G` of fiber elements whose :math:`A(h)` is a signed permutation
(rotations by multiples of 90 degrees and the axis/diagonal reflections; all of C2, C4,
D1, D2, D4; the C4 / D4 subgroup of C8 / D8; in 3D the 24 rotations of ``octaOnR3``, the
48 elements of ``fullOctaOnR3``, the quarter turns of ``rot2dOnR3(4)``, the 12 rotations of
the cube inside ``icoOnR3`` and the 24 inside ``rot3dOnR3``'s SO(3)):

.. math::
    \\kappa_{\\text{sym}}(y) = \\frac{1}{|H|}\\sum_{h\\in H}
        \\rho_{\\text{out}}(h)\\,\\kappa\\big(A(h)^{-1} y\\big)\\,\\rho_{\\text{in}}(h)^{-1}.

These :math:`A(h)` map the ``k x k`` (``k x k x k``) kernel grid onto itself, so the sum
only permutes taps, and :math:`\\kappa_{\\text{sym}}` satisfies the constraint for every :math:`h \\in H`
up to the rounding of the working dtype (``1e-16`` in float64). Since every
:math:`G`-equivariant filter is :math:`H`-invariant, the projection does not change the
function space: on escnn's filters it moves entries by float32 rounding only. The bias
(trivial fields only) is averaged the same way. The projection is linear, differentiable
and applied once per :meth:`expand` call (once per sequence in the recurrent layers);
signed-permutation representations (trivial, regular, quotient, the C4/D4 irreps) are
applied as gathers, others as dense matrices. Pass ``symmetrize=False`` for escnn's raw
filter.

Tap coordinates. Filter tap ``[..., i, j]`` of a 2D filter is the offset
:math:`y = (j - c, c - i)` (``x`` right, ``y`` up, :math:`c = \\lfloor k/2 \\rfloor`); tap
``[..., i, j, l]`` of a 3D filter is :math:`y = (l - c, c - j, c - i)`: escnn's voxel axes
``(-z, -y, x)`` (:mod:`flow_escnn.flows._volume`). With torch's cross-correlation,
:math:`\\kappa \\star f (x) = \\sum_y \\kappa(y) f(x + y)` in these coordinates, so the grid
action :math:`[g \\cdot f](x) = \\rho(g) f(A(g)^{-1} x)` commutes with it exactly.

Private basis buffers
---------------------
escnn caches each sampled basis block module globally
(``basisexpansion_singleblock._stored_filters``) and *shares the module* between every
``R2Conv`` (``R3Conv``) built with the same representation pair and kernel grid. ``.double()``,
``.half()`` or ``.to(device)`` on one network therefore silently converts the basis of
every other network too (a float32 model next to a float64 one then fails with
``expected scalar type Double but found Float``; moving one model to CUDA moves the basis
of an unrelated CPU model). :class:`SteerableConv` gives its inner ``R2Conv`` private
shallow copies of those block modules (same tensors, own buffer dictionaries), so casts and
moves stay local; no basis is recomputed and no memory is used until a cast happens.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn._compat import group as _group
from flow_escnn._validate import bounded_float, odd_positive_int, one_of
from flow_escnn.flows._planar import lattice_candidates, spatial_matrix
from flow_escnn.nn._spec import refuses_pickle

__all__ = ["SteerableConv", "PADDING_MODES", "AUTO_PADDING", "resolve_padding", "needs_torus", "dense_conv",
           "periodic_conv", "export_conv", "export_escnn"]

PADDING_MODES = ("circular", "zeros")
#: The default ``padding_mode`` of the flow layers and models: chosen from :math:`V` by :func:`resolve_padding`.
AUTO_PADDING = "auto"


def resolve_padding(padding_mode: str, flows: Any) -> str:
    """``padding_mode`` of a flow layer over ``flows`` (a FlowSet): ``"circular"`` / ``"zeros"`` as given;
    ``"auto"`` is ``"zeros"`` for a :math:`V` of rotation flows (some generator rotates, none translates,
    e.g. ``FlowSet.rotations``), else ``"circular"``.

    A rotation flow turns the frame about its centre, and on a square grid zero padding commutes with
    the grid's rotations and reflections exactly, as circular padding does; it lets ``conv2d`` pad
    (cheaper than pre-padding by gathers), as the paper's rotation code does. Every other :math:`V`
    keeps the torus: a translation flow wraps around it, and ``FlowSet.identity`` (the G-RNN) says
    nothing of the data's motion, so it stays equivariant to static translations of the torus (the
    experiment configs pick zeros for the G-RNN of a rotating task,
    :attr:`~flow_escnn.models.ModelConfig.model_padding`).

    Raises:
        ValueError: for another ``padding_mode``.
    """
    one_of(padding_mode, PADDING_MODES + (AUTO_PADDING,), "padding_mode")
    if padding_mode != AUTO_PADDING:
        return padding_mode
    return "circular" if needs_torus(flows) else "zeros"


def needs_torus(flows: Any) -> bool:
    """Whether an exact symmetry of a layer over ``flows`` needs circular padding (:func:`resolve_padding`)."""
    if any(any(t != 0 for t in g.translation) for g in flows):
        return True
    return all(g.is_identity for g in flows)  # V = {0}: the G-RNN; no rotation flow chose the centre


@refuses_pickle
class SteerableConv(enn.EquivariantModule):
    """A G-steerable 2D or 3D convolution ``in_type -> out_type`` (stride 1, 'same' output size).

    2D on escnn's planar gspaces (inner ``R2Conv``, tensors ``[N, C, H, W]``), 3D on its gspaces on
    :math:`\\mathbb{R}^3` (inner ``R3Conv``, tensors ``[N, C, D, H, W]``, voxel convention of
    :mod:`flow_escnn.flows._volume`); :attr:`dimensionality` says which.

    .. math::
        [\\kappa \\star f](x) = \\sum_{y} \\kappa(y)\\, f(x + y), \\qquad
        \\kappa(g y) = \\rho_{\\text{out}}(g)\\,\\kappa(y)\\,\\rho_{\\text{in}}(g)^{-1},

    so :math:`\\kappa \\star (g\\cdot f) = g\\cdot(\\kappa \\star f)` for rotations/reflections
    that map the kernel grid onto itself, and for every translation of a periodic grid.

    Args:
        in_type: input ``FieldType``.
        out_type: output ``FieldType`` (same gspace).
        kernel_size: odd kernel size.
        bias: whether to learn a bias (escnn puts it on trivial fields only).
        padding_mode: ``"circular"`` (exact on the torus) or ``"zeros"``.
        symmetrize: project the expanded filter onto the exactly equivariant subspace of the
            grid-preserving fiber elements (default True; see the module docstring).
        **r2conv_kwargs: passed to ``escnn.nn.R2Conv`` / ``escnn.nn.R3Conv`` (e.g. ``frequencies_cutoff``,
            ``initialize``).
    """

    def __init__(
        self,
        in_type: Any,
        out_type: Any,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "circular",
        symmetrize: bool = True,
        **r2conv_kwargs: Any,
    ) -> None:
        super().__init__()
        odd_positive_int(kernel_size, "kernel_size")
        one_of(padding_mode, PADDING_MODES, "padding_mode")
        for name, ft in (("in_type", in_type), ("out_type", out_type)):
            if not isinstance(ft, enn.FieldType):
                raise TypeError(f"{name} must be an escnn FieldType, got {type(ft).__name__}")
        if in_type.gspace != out_type.gspace:
            raise ValueError(f"in_type is on {in_type.gspace} but out_type on {out_type.gspace}")
        dim = getattr(in_type.gspace, "dimensionality", None)
        if dim not in (2, 3):
            raise ValueError(f"SteerableConv needs a gspace on R^2 or R^3, got {in_type.gspace} of dimensionality {dim}")
        for key in ("padding", "stride", "padding_mode", "dilation", "groups"):
            if key in r2conv_kwargs:
                raise ValueError(f"SteerableConv fixes {key!r} (stride 1, same size); do not pass it")
        self.in_type = in_type
        self.out_type = out_type
        self.kernel_size = kernel_size
        self.padding_mode = padding_mode
        inner = enn.R2Conv if dim == 2 else enn.R3Conv
        self.conv = inner(in_type, out_type, kernel_size, padding=0, bias=bias, **r2conv_kwargs)
        _unshare_basis_blocks(self.conv)
        for module in self.conv.modules():  # escnn keeps some SO(2)/O(2) index buffers as expanded views,
            for name, buf in module._buffers.items():  # which load_state_dict cannot copy into
                if buf is not None and not buf.is_contiguous():
                    module._buffers[name] = buf.contiguous()
        # R2Conv registers placeholder 'filter' / 'expanded_bias' buffers at construction and deletes
        # them in train mode: drop them now so the state_dict of a fresh module has the same keys as
        # after .train() / .eval()
        self.conv.train(True)
        self._dim = int(dim)
        self.symmetrize = bool(symmetrize)
        self._build_symmetrizer()

    @property
    def dimensionality(self) -> int:
        """2 for a planar convolution (``R2Conv``, ``Conv2d``), 3 for a volumetric one (``R3Conv``, ``Conv3d``)."""
        return self._dim

    # -- train/eval: keep the inner R2Conv's state_dict mode-independent --------------------------
    def train(self, mode: bool = True) -> "SteerableConv":
        self.training = mode
        self.conv.train(True)  # escnn would register 'filter' buffers in eval mode; we expand explicitly
        return self

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the placeholder buffers were dropped (or by a bare R2Conv in eval
        # mode) carry escnn's cached 'conv.filter' / 'conv.expanded_bias': they are derived data, ignore them
        for key in ("conv.filter", "conv.expanded_bias"):
            state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- expand once, apply many times ---------------------------------------------------------------
    def expand(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The dense filter ``[C_out, C_in, k, k]`` (3D: ``[C_out, C_in, k, k, k]``) and bias ``[C_out]``
        (or None), differentiable.

        With ``symmetrize=True`` (default) the filter is projected onto the subspace that is
        exactly equivariant under the grid-preserving fiber elements (module docstring).
        """
        filt, bias = self.conv.expand_parameters()
        if self.symmetrize:
            filt, bias = self.symmetrize_filter(filt, bias)
        return filt, bias

    # -- exact symmetrisation over the grid-preserving subgroup --------------------------------------
    @property
    def grid_group(self) -> List[Any]:
        """The fiber elements :math:`h` whose :math:`A(h)` maps the kernel grid onto itself."""
        return list(self._grid_group)

    def _build_symmetrizer(self) -> None:
        gs = self.in_type.gspace
        d, k, c0 = self._dim, self.kernel_size, self.kernel_size // 2
        elems, mats = [], []
        for g in _grid_candidates(gs):
            a = _grid_matrix(gs, g, d)
            if a is not None:
                elems.append(g)
                mats.append(a)
        self._grid_group = tuple(elems)
        self._sym_active = len(elems) > 1
        if not self._sym_active:
            return
        # tap offsets y = (x, y[, z]) of the flat taps (module docstring): array axes (..., -y, x) / (-z, -y, x)
        idx = np.stack(np.meshgrid(*([np.arange(k)] * d), indexing="ij"), -1).reshape(-1, d)
        pts = np.concatenate([idx[:, -1:] - c0, c0 - idx[:, -2::-1]], axis=1)
        spatial, outs, ins = [], [], []
        for h, a in zip(elems, mats):
            src = pts @ a  # A(h)^{-1} y = A(h)^T y for the orthogonal A(h), exact in integers
            src_idx = np.concatenate([c0 - src[:, :0:-1], src[:, :1] + c0], axis=1)
            spatial.append(np.ravel_multi_index(tuple(src_idx.T), (k,) * d))
            outs.append(np.asarray(self.out_type.representation(h), dtype=np.float64))
            ins.append(np.asarray(self.in_type.representation(~h), dtype=np.float64))  # rho_in(h)^{-1}
        self.register_buffer("_sym_spatial", torch.from_numpy(np.stack(spatial)), persistent=False)
        out_sp = [_signed_permutation(r) for r in outs]
        # right action X @ R on columns: column i of the result is sign * column q[i] of X
        in_sp = [_signed_permutation(r.T) for r in ins]
        self._sym_gather = all(p is not None for p in out_sp + in_sp)
        if self._sym_gather:
            self.register_buffer("_sym_out_idx", torch.from_numpy(np.stack([p[0] for p in out_sp])), persistent=False)
            self.register_buffer("_sym_out_sign", torch.from_numpy(np.stack([p[1] for p in out_sp])), persistent=False)
            self.register_buffer("_sym_in_idx", torch.from_numpy(np.stack([p[0] for p in in_sp])), persistent=False)
            self.register_buffer("_sym_in_sign", torch.from_numpy(np.stack([p[1] for p in in_sp])), persistent=False)
        else:
            self.register_buffer("_sym_out_mat", torch.from_numpy(np.stack(outs)), persistent=False)
            self.register_buffer("_sym_in_mat", torch.from_numpy(np.stack(ins)), persistent=False)

    def symmetrize_filter(
        self, filt: torch.Tensor, bias: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:math:`\\frac{1}{|H|}\\sum_h \\rho_{out}(h)\\,\\kappa(A(h)^{-1}y)\\,\\rho_{in}(h)^{-1}` (and
        :math:`\\frac{1}{|H|}\\sum_h \\rho_{out}(h) b` for the bias) for any filter ``[C_out, C_in, k, k]``
        (3D: ``[C_out, C_in, k, k, k]``).

        A linear projection (idempotent); a no-op when :math:`H` is trivial.
        """
        if not self._sym_active:
            return filt, bias
        expected = (self.out_type.size, self.in_type.size) + (self.kernel_size,) * self._dim
        if tuple(filt.shape) != expected:
            raise ValueError(f"expected a filter [{', '.join(map(str, expected))}], got {tuple(filt.shape)}")
        co, ci = expected[:2]
        flat = filt.reshape(co, ci, -1)
        n = len(self._grid_group)
        acc = None
        bacc = None
        for m in range(n):
            sp = self._sym_spatial[m]
            if self._sym_gather:
                oi, os_ = self._sym_out_idx[m], self._sym_out_sign[m].to(flat.dtype)
                ii, is_ = self._sym_in_idx[m], self._sym_in_sign[m].to(flat.dtype)
                term = flat[oi[:, None, None], ii[None, :, None], sp[None, None, :]]
                term = term * (os_[:, None, None] * is_[None, :, None])
                if bias is not None:
                    bterm = bias[oi] * os_
            else:
                ro = self._sym_out_mat[m].to(flat.dtype)
                ri = self._sym_in_mat[m].to(flat.dtype)
                term = torch.einsum("ab,bcp,cd->adp", ro, flat[:, :, sp], ri)
                if bias is not None:
                    bterm = ro @ bias
            acc = term if acc is None else acc + term
            if bias is not None:
                bacc = bterm if bacc is None else bacc + bterm
        out = (acc / n).reshape(expected)
        return out, (None if bias is None else bacc / n)

    # -- initialisation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_identity_(self, gain: float = 1.0, noise: float = 0.1) -> "SteerableConv":
        """Set the weights so that the filter is ``gain`` times the identity at the centre tap plus ``noise``
        times the present filter scaled to a largest entry of 1 (the IRNN initialisation of Le, Jaitly and
        Hinton 2015, for a recurrent convolution):

        .. math::
            \\kappa(y) = g\\,\\delta_{y,0}\\,I + \\epsilon\\,\\frac{\\kappa_0(y)}{\\max|\\kappa_0|}.

        The centre-tap identity is equivariant for any field type mapped to itself (it commutes with
        every :math:`\\rho(g)` and its support is invariant), so it lies in the steerable basis; the
        weights are its least-squares coefficients (float64, on the expanded and symmetrised basis),
        checked to reproduce it. A recurrent layer :math:`h_t = \\sigma(W * h_{t-1} + U * f_t)` that
        starts so carries its state forward almost unchanged; in a FERNN every velocity slice then starts
        as an integrator of the input along its own flow.

        Args:
            gain: the identity's weight :math:`g` (finite, > 0, at most
                :data:`~flow_escnn._validate.MAX_HYPERPARAMETER` as every float hyper-parameter).
            noise: the weight :math:`\\epsilon` of the present (random) filter (finite, >= 0, at most the same).

        Returns:
            ``self``, with new weights (the bias is left as it is).

        Raises:
            ValueError: for ``in_type != out_type``, a bad ``gain`` / ``noise``, or a basis that does
                not hold the identity (e.g. a ``maximum_offset`` or ``rings`` setting of escnn that
                drops the centre tap).

        Example:
            >>> from escnn import gspaces, nn as enn
            >>> gs = gspaces.rot2dOnR2(4)
            >>> ft = enn.FieldType(gs, [gs.regular_repr])
            >>> w = SteerableConv(ft, ft, 3).init_identity_(0.8, noise=0.0)
            >>> filt = w.expand()[0].detach()
            >>> bool(torch.allclose(filt[:, :, 1, 1], 0.8 * torch.eye(4), atol=1e-5))
            True
            >>> float(filt[:, :, 0].abs().max()) < 1e-5  # nothing off the centre
            True
        """
        if self.in_type != self.out_type:
            raise ValueError(
                f"init_identity_ needs a convolution from a field type to the same field type (a recurrent W); "
                f"this one maps {self.in_type.size} to {self.out_type.size} channels ({self.in_type} -> {self.out_type})"
            )
        gain = bounded_float(gain, "init_identity_: gain", low_open=True)
        noise = bounded_float(noise, "init_identity_: noise")
        weights = self.conv.weights
        saved = weights.detach().clone()
        filt0 = self.expand()[0].detach().double()
        target = torch.zeros_like(filt0)
        c = self.kernel_size // 2
        target[(slice(None), slice(None)) + (c,) * self._dim] = torch.eye(self.in_type.size, dtype=torch.float64)
        frozen = not weights.requires_grad
        try:
            weights.requires_grad_(True)  # B^T u is a gradient (a frozen layer is initialised too)
            coef = self._least_squares(target)
            weights.copy_(coef.to(weights.dtype))
            miss = float((self.expand()[0].detach().double() - target).abs().max())
        finally:
            weights.copy_(saved)
            weights.requires_grad_(not frozen)
        if miss > 1e-5:
            raise ValueError(
                f"init_identity_: the centre-tap identity is not in this convolution's steerable basis (least-squares "
                f"miss {miss:.2e}); build it with escnn's default basis settings (they keep the centre tap)"
            )
        scale = float(filt0.abs().max())
        new = gain * coef + (noise / scale if scale > 0 else 0.0) * saved.double()
        weights.copy_(new.to(weights.dtype))
        return self

    def _least_squares(self, target: torch.Tensor, tol: float = 1e-24) -> torch.Tensor:
        """The weights :math:`w` minimising :math:`\\lVert B w - t\\rVert` for the expanded (and symmetrised) filter
        :math:`B w` and a target filter :math:`t`, float64: conjugate gradients on :math:`B^T B w = B^T t`, with
        :math:`B v` one expansion and :math:`B^T u` its gradient (escnn's bases are well conditioned: a few
        iterations; at most one per weight). Leaves the weights changed (the caller restores them)."""
        weights = self.conv.weights

        def transpose(u: Optional[torch.Tensor]) -> torch.Tensor:  # B^T u (u = None: B^T B w, w the weights)
            with torch.enable_grad():
                filt = self.expand()[0]
                (grad,) = torch.autograd.grad(filt, weights, filt.detach() if u is None else u.to(filt.dtype))
            return grad.double()

        def apply(v: torch.Tensor) -> torch.Tensor:  # B^T B v
            weights.copy_(v.to(weights.dtype))
            return transpose(None)

        x = torch.zeros(weights.numel(), dtype=torch.float64)
        r = transpose(target)
        p, rs = r.clone(), float(r @ r)
        start = rs
        for _ in range(weights.numel()):
            if rs <= tol * max(start, 1e-300):
                break
            ap = apply(p)
            alpha = rs / float(p @ ap)
            x += alpha * p
            r -= alpha * ap
            rs, old = float(r @ r), rs
            p = r + (rs / old) * p
        return x

    def apply_expanded(self, x: torch.Tensor, filt: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """Convolve a plain tensor ``[N, C_in, H, W]`` (3D: ``[N, C_in, D, H, W]``) with an already expanded filter."""
        return periodic_conv(x, filt, bias, self.padding_mode)

    def forward(self, input: Any) -> Any:  # noqa: A002 - escnn's signature
        """Per-frame forward on a ``GeometricTensor [N, C_in, H, W]`` (3D: ``[N, C_in, D, H, W]``)."""
        if not isinstance(input, enn.GeometricTensor) or input.type != self.in_type:
            got = input.type if isinstance(input, enn.GeometricTensor) else type(input).__name__
            raise ValueError(f"SteerableConv expects a GeometricTensor of type {self.in_type}, got {got}")
        if input.tensor.dim() != self._dim + 2:
            raise ValueError(f"SteerableConv ({self._dim}D) expects a GeometricTensor {_layout(self._dim, 'C_in')}, "
                             f"got shape {tuple(input.tensor.shape)}")
        filt, bias = self.expand()
        return enn.GeometricTensor(self.apply_expanded(input.tensor, filt, bias), self.out_type)

    def evaluate_output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != self._dim + 2 or input_shape[1] != self.in_type.size:
            raise ValueError(f"expected an input shape {_layout(self._dim, self.in_type.size)}, got {input_shape}")
        return (input_shape[0], self.out_type.size) + tuple(input_shape[2:])

    def export(self) -> torch.nn.Module:
        """A plain ``torch.nn.Conv2d`` (3D: ``torch.nn.Conv3d``) with the expanded weights and the same padding mode."""
        with torch.no_grad():
            filt, bias = self.expand()
        return dense_conv(filt, bias, self.kernel_size // 2, self.padding_mode)


def _layout(dim: int, channels: Any) -> str:
    return f"[N, {channels}, H, W]" if dim == 2 else f"[N, {channels}, D, H, W]"


def _grid_candidates(gspace: Any) -> List[Any]:
    """Fiber elements that may map the kernel grid onto itself (filter them by :func:`_grid_matrix`).

    2D: :func:`~flow_escnn.flows._planar.lattice_candidates`. 3D: every element of a finite fiber group;
    for a continuous one (SO(3), O(3), SO(2), O(2), ... on R^3) the elements acting as one of the 48 signed
    permutation matrices, found through the gspace's restriction map from O(3) (None off the subgroup).
    """
    if getattr(gspace, "dimensionality", 2) == 2:
        return lattice_candidates(gspace)
    G = gspace.fibergroup
    if not G.continuous:
        return list(G.elements)
    restrict = getattr(gspace, "_restriction", None)
    if restrict is None:  # pragma: no cover - escnn layout changed: symmetrise over nothing
        return []
    o3 = _group.o3_group()
    found = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            det = int(round(np.linalg.det(m)))
            try:
                g = restrict(o3.element((0 if det == 1 else 1, m * det), "MAT"))
            except Exception:  # noqa: BLE001 - not in the subgroup
                continue
            if g is not None:
                found.append(g)
    return found


def _grid_matrix(gspace: Any, element: Any, dim: int) -> Optional[np.ndarray]:
    """:math:`A(g)` as an integer signed-permutation matrix ``[dim, dim]``, or None if it is not one."""
    if dim == 2:
        a = spatial_matrix(gspace, element)
    else:
        a = np.asarray(gspace.basespace_action(element), dtype=np.float64).reshape(3, 3)
    r = np.rint(a)
    if np.max(np.abs(a - r)) > 1e-9 or not np.all(np.abs(r) <= 1):
        return None
    if not (np.all(np.abs(r).sum(0) == 1) and np.all(np.abs(r).sum(1) == 1)):
        return None
    return r.astype(np.int64)


def dense_conv(
    filt: torch.Tensor,
    bias: Optional[torch.Tensor],
    padding: Any,
    padding_mode: str,
    stride: Any = 1,
    dilation: Any = 1,
    groups: int = 1,
) -> torch.nn.Module:
    """A ``torch.nn.Conv2d`` (filter ``[C_out, C_in/groups, k, k]``) or ``torch.nn.Conv3d`` (filter
    ``[C_out, C_in/groups, k, k, k]``) holding an expanded filter and bias, with ``padding_mode`` kept.

    Raises:
        ValueError: for a filter of another rank.
    """
    kinds = {4: torch.nn.Conv2d, 5: torch.nn.Conv3d}
    if filt.dim() not in kinds:
        raise ValueError(f"dense_conv expects a filter [C_out, C_in, k, k] or [C_out, C_in, k, k, k], "
                         f"got shape {tuple(filt.shape)}")
    conv = kinds[filt.dim()](
        filt.shape[1] * groups,
        filt.shape[0],
        tuple(filt.shape[2:]),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias is not None,
        padding_mode=padding_mode,
    ).to(device=filt.device, dtype=filt.dtype)
    with torch.no_grad():
        conv.weight.copy_(filt)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _signed_permutation(rho: np.ndarray, tol: float = 1e-9) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(idx, sign)`` with ``(rho @ X)[o] = sign[o] * X[idx[o]]`` if ``rho`` is a signed permutation, else None."""
    r = np.rint(rho)
    if np.max(np.abs(rho - r), initial=0.0) > tol or not np.all(np.abs(r) <= 1):
        return None
    nz = np.abs(r)
    if not (np.all(nz.sum(0) == 1) and np.all(nz.sum(1) == 1)):
        return None
    idx = np.argmax(nz, axis=1)
    return idx.astype(np.int64), r[np.arange(len(idx)), idx].astype(np.float64)


def _fresh(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A shared basis tensor as escnn built it: on the CPU, floating ones in the default dtype (a plain
    ``R2Conv`` elsewhere may have cast or moved the cached module in place)."""
    if t is None:
        return None
    return t.to(device="cpu", dtype=torch.get_default_dtype()) if t.is_floating_point() else t.to("cpu")


def _private_module_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of ``module`` with its own parameter / buffer / submodule dictionaries (buffers as
    escnn built them, see :func:`_fresh`; no copy unless a cast or move happened)."""
    new = copy.copy(module)
    new.__dict__["_parameters"] = dict(module._parameters)
    new.__dict__["_buffers"] = {name: _fresh(buf) for name, buf in module._buffers.items()}
    new.__dict__["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
    new.__dict__["_modules"] = {name: _private_module_copy(child) for name, child in module._modules.items()}
    return new


def _unshare_basis_blocks(conv: torch.nn.Module) -> None:
    """Replace escnn's globally cached (shared) basis block modules in ``conv`` by private copies."""
    try:
        from escnn.nn.modules.basismanager.basisexpansion_singleblock import SingleBlockBasisExpansion
    except ImportError:  # pragma: no cover - escnn layout changed
        return
    for parent in list(conv.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, SingleBlockBasisExpansion):
                parent._modules[name] = _private_module_copy(child)


_CONV = {4: F.conv2d, 5: F.conv3d}


def periodic_conv(x: torch.Tensor, filt: torch.Tensor, bias: Optional[torch.Tensor], padding_mode: str) -> torch.Tensor:
    """'Same'-size stride-1 convolution with circular or zero padding (plain torch), 2D or 3D by the filter's
    rank: ``x [N, C_in, H, W]`` with ``filt [C_out, C_in, kh, kw]`` (``F.conv2d``), ``x [N, C_in, D, H, W]``
    with ``filt [C_out, C_in, kd, kh, kw]`` (``F.conv3d``); odd kernel sizes.

    Raises:
        ValueError: for a filter of another rank, or an input whose rank or channels do not match it.
    """
    conv = _CONV.get(filt.dim())
    if conv is None:
        raise ValueError(f"periodic_conv expects a filter [C_out, C_in, k, k] or [C_out, C_in, k, k, k], "
                         f"got shape {tuple(filt.shape)}")
    if x.dim() != filt.dim() or x.shape[1] != filt.shape[1]:
        raise ValueError(f"a {filt.dim() - 2}D filter {tuple(filt.shape)} convolves inputs "
                         f"{_layout(filt.dim() - 2, filt.shape[1])}, got shape {tuple(x.shape)}")
    pads = tuple(s // 2 for s in filt.shape[2:])
    if padding_mode == "circular" and any(pads):
        return conv(F.pad(x, tuple(p for p in reversed(pads) for _ in (0, 1)), mode="circular"), filt, bias)
    return conv(x, filt, bias, padding=pads)


def _export_r2conv(conv: Any) -> torch.nn.Module:
    """escnn ``R2Conv`` / ``R3Conv`` -> ``Conv2d`` / ``Conv3d`` keeping ``padding_mode`` (escnn's export drops it)."""
    was_training = conv.training
    conv.train(True)
    try:
        with torch.no_grad():
            filt, bias = conv.expand_parameters()
    finally:
        conv.train(was_training)
    return dense_conv(filt, bias, conv.padding, conv.padding_mode, conv.stride, conv.dilation, conv.groups)


def export_conv(conv: Any) -> torch.nn.Module:
    """A :class:`SteerableConv` or escnn ``R2Conv`` / ``R3Conv`` as a plain ``torch.nn.Conv2d`` / ``Conv3d``
    (padding mode kept)."""
    if isinstance(conv, SteerableConv):
        out = conv.export()
        if out.padding_mode != conv.padding_mode:  # guard against a regression in SteerableConv.export
            raise RuntimeError(f"SteerableConv.export lost padding_mode {conv.padding_mode!r}")
        return out
    if isinstance(conv, (enn.R2Conv, enn.R3Conv)):
        return _export_r2conv(conv)
    raise TypeError(f"export_conv expects a SteerableConv or an escnn R2Conv / R3Conv, got {type(conv).__name__}")


def export_escnn(module: Any) -> torch.nn.Module:
    """Any escnn ``EquivariantModule`` as plain PyTorch: convolutions by :func:`export_conv` (circular
    padding kept), a ``SequentialModule`` child by child, anything else by its own ``export()``."""
    if isinstance(module, (SteerableConv, enn.R2Conv, enn.R3Conv)):
        return export_conv(module)
    if isinstance(module, enn.SequentialModule):
        return torch.nn.Sequential(*[export_escnn(m) for m in module.children()])
    return module.export()
