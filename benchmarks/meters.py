"""Memory meters and the conv-only floor used by the benchmark.

The floor replays the step's convolutions with the functions the step called: ``F.conv2d`` (``F.conv3d``
for volumes), or
:func:`flow_escnn.nn._kernels.conv2d` (the same convolution; GEMMs on the shifted copies for one-channel
inputs on the CPU), so it neither misses nor slows down the layer-0 input convolutions. A co-moving FERNN's
deferred input convolution (:func:`flow_escnn.nn._kernels.add_thin_conv_`, added into the recurrent term) is
recorded and replayed as that ``conv2d`` call.
"""
from __future__ import annotations

import argparse
import statistics
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from flow_escnn.flows._layout import is_channels_last
from flow_escnn.nn._kernels import add_thin_conv_ as library_add_thin_conv_
from flow_escnn.nn._kernels import conv2d as library_conv2d
from flow_escnn.nn._kernels import conv3d as library_conv3d

__all__ = ["SavedTensorMeter", "LiveTensorMeter", "ConvRecorder", "ConvFloor", "time_ratio", "kernel_main"]


class SavedTensorMeter:
    """Bytes of the distinct storages saved for backward while active (deduplicated by data_ptr)."""

    def __init__(self) -> None:
        self.storages: Dict[Tuple[str, int], int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            st = t.untyped_storage()
            key = (str(t.device), st.data_ptr())
            self.storages[key] = max(self.storages.get(key, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            pass
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @property
    def bytes(self) -> int:
        return int(sum(self.storages.values()))

    def __enter__(self) -> "SavedTensorMeter":
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


class LiveTensorMeter(TorchDispatchMode):
    """Peak of the live bytes of tensor storages produced by ATen ops while active.

    Every op output's storage is counted once, from its first appearance until it is freed
    (a weakref finalizer on the storage). Storages given to ``ignore`` (parameters, inputs)
    are never counted. Kernel-internal scratch buffers are not seen.
    """

    def __init__(self, ignore: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: Dict[int, int] = {}
        self._ignored: Dict[int, Any] = {}
        self.current = 0
        self.peak = 0
        for t in ignore:
            st = t.untyped_storage()
            self._ignored[id(st)] = st  # strong reference: the id cannot be reused meanwhile

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(st)
        if key in self._live or key in self._ignored:
            return
        nb = int(st.nbytes())
        if nb == 0:
            return
        self._live[key] = nb
        self.current += nb
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


#: what the floor replays for each recorded function
_FUNCTIONS = {library_conv2d: library_conv2d, library_conv3d: library_conv3d, F.conv3d: F.conv3d, torch.conv3d: F.conv3d}


class ConvRecorder(TorchFunctionMode):
    """Records every ``conv2d`` / ``conv3d`` call made while active (``F.conv2d``, ``F.conv3d`` and the library's):
    function, shapes, dtypes, flags and arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Dict[str, Any]] = []

    def __torch_function__(self, func: Callable, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is library_add_thin_conv_:  # out += conv2d(x, w, b, padding): recorded as that conv2d
            out, (x, w, b, padding) = args
            self.calls.append(dict(
                fn=library_conv2d, input=tuple(x.shape), input_grad=bool(x.requires_grad), dtype=x.dtype,
                device=x.device, channels_last=False, weight=tuple(w.shape), bias=b is not None,
                kwargs={"padding": padding, **({"channels_last": True} if is_channels_last(out) else {})},
            ))
        elif func in (F.conv2d, torch.conv2d, library_conv2d, library_conv3d, F.conv3d, torch.conv3d):
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            names = (("padding", "channels_last") if func is library_conv2d else ("padding",)
                     if func is library_conv3d else ("stride", "padding", "dilation", "groups"))
            rest = dict(zip(names, args[3:]))
            rest.update({k: v for k, v in kwargs.items() if k != "bias"})
            if not rest.get("channels_last", True):  # the default layout: recorded as a plain call
                del rest["channels_last"]
            self.calls.append(dict(
                fn=_FUNCTIONS.get(func, F.conv2d),
                input=tuple(x.shape), input_grad=bool(x.requires_grad), dtype=x.dtype, device=x.device,
                channels_last=x.dim() == 4 and is_channels_last(x),
                weight=tuple(w.shape), bias=b is not None, kwargs=rest,
            ))
        return func(*args, **kwargs)


class ConvFloor:
    """The conv-only floor of a step: the recorded convolutions alone, forward then backward.

    Inputs, weights and output gradients are made once; a call runs every convolution
    forward (keeping the outputs alive, as a training step keeps its activations), then one
    backward over all of them, so it pays the same allocation and memory residency as the
    step it was recorded from, and nothing else.
    """

    def __init__(self, calls: Sequence[Dict[str, Any]], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for c in calls:
            dev, dt = c["device"], c["dtype"]
            x = torch.randn(c["input"], generator=g, dtype=dt).to(dev)
            if c.get("channels_last"):  # the layout the step's input had (a channels-last state)
                x = x.contiguous(memory_format=torch.channels_last)
            x = x.requires_grad_(c["input_grad"])
            w = torch.randn(c["weight"], generator=g, dtype=dt).to(dev).requires_grad_()
            b = torch.randn(c["weight"][0], generator=g, dtype=dt).to(dev).requires_grad_() if c["bias"] else None
            self.items.append((c["fn"], x, w, b, c["kwargs"]))
        self.grads: List[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self) -> None:
        outs = [fn(x, w, b, **kw) for fn, x, w, b, kw in self.items]
        if not self.grads:
            self.grads = [torch.ones_like(o) for o in outs]
        torch.autograd.backward(outs, [g.to(o.dtype) for g, o in zip(self.grads, outs)])
        for _, x, w, b, _ in self.items:
            for t in (x, w, b):
                if t is not None:
                    t.grad = None


def time_ratio(slow: Callable[[], Any], fast: Callable[[], Any], repeats: int) -> float:
    """Median time of ``slow`` / median time of ``fast``: timed alternately (the order flips every
    round, so load changes hit both alike), after one warm-up round."""
    times: Dict[str, List[float]] = {"slow": [], "fast": []}
    for r in range(repeats + 1):
        for name, fn in ((("slow", slow), ("fast", fast)) if r % 2 else (("fast", fast), ("slow", slow))):
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["slow"]) / statistics.median(times["fast"])


def kernel_main(description: str, run: Callable[[int], Dict[str, float]], prefix: str, repeats: int,
                argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """The command line of a kernel benchmark: ``--threads``, ``--repeats``; prints ``RATIOS <prefix><k>=<v> ...``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=repeats)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    ratios = run(a.repeats)
    print("RATIOS " + " ".join(f"{prefix}{k}={v:.4f}" for k, v in ratios.items()), flush=True)
    return ratios
