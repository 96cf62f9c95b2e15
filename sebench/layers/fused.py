"""The fused SE tail: ``relu(x * s + shortcut)`` (or ``x * s + shortcut``, or ``x * s``) as one autograd node.

A post-activation block with SE at the ``standard`` position ends with ``relu(SE(F(x)) + shortcut)``.
Written as separate ops (``x * s``, ``+ shortcut``, ``relu``), training pays three forward passes over
the activation, each into a new buffer, and in backward the ReLU mask, ``g * s``, a full-size temporary
``g * x`` for the gate's gradient, and autograd's sum of the scale's and the squeeze's gradients of ``x``.
The original Caffe release of SENet fused scale and add into one "Axpy" layer; this module does that and
more, with standard ATen ops only (so the same code runs on CPU and CUDA, NCHW and channels_last):


forward (autograd)  ``out = addcmul(shortcut, x, s).relu_()``: one pass into one new buffer plus an
                    in-place ReLU; saves ``x``, ``s`` and ``out`` (``out`` is the next block's input and
                    alive anyway, so the ReLU mask costs no memory).
forward (no grad)   the same, written into ``x``'s buffer when the caller says ``x`` is a temporary.
backward            ``g = grad * (out > 0)`` (ReLU's own one-pass kernel; also the shortcut's gradient);
                    ``grad_s = sum_hw(g * x)`` by :func:`channel_dot` (on CPU in cache-sized chunks, so
                    the product never makes a full-size temporary); and, with the average squeeze,
                    ``grad_x = g * s + grad_z / HW`` in ONE pass: the squeeze is an autograd node of its
                    own (:class:`_AvgSqueeze`) that receives ``g`` and ``s`` from the tail's backward,
                    which always runs first (the squeeze's gradient flows through the gate), so autograd
                    never sums two full-size gradients of ``x``.

Buffers (CPU allocations above glibc's 32 MiB mmap threshold pay page faults on every use, so at
ImageNet sizes a fresh buffer costs about as much as a pass over it): when autograd will free the graph
after this backward (no ``retain_graph``) and nothing else holds ``x`` (checked with its storage's use
count), ``grad_x`` is written into the saved ``x``, so the backward allocates one activation-sized buffer,
``g``, as a plain ReLU's backward does (the unfused backward allocates three). ``g`` gets a fresh buffer
on purpose: autograd then sums the shortcut's gradient into it in place. The check uses two private torch
hooks, checked once by name (:func:`_private_ok`) and calibrated once on a tiny graph; if either is
missing, or the calibration fails, a fresh buffer is used. In the forward, the
tail's output goes into the module's output of the previous training step once nothing else holds it
(:func:`_output_buffer`): so SE adds no activation-sized allocation to a CPU training step.

Inference in a bottleneck also skips the squeeze's read of the block's widest tensor: see
:func:`excite_through_1x1`. Under a dispatch mode (FLOP counting) and under torch.compile only the
textbook ops run. torch.compile of the SE tail itself was measured and does not pay on CPU: with
torch 2.14.1 inductor's kernels for the channels_last tail were 2-4x slower than this eager path
(forward + backward of one stage's tail, 1 thread), so there is no compiled variant.

Numerically equal to the reference ops (tests: forward and backward to 1e-6 in float32 for every gate,
squeeze, variant and both layouts; gradcheck in float64). Choosing between them is an execution detail,
like channels_last, not part of the model: see ``SqueezeExcite.impl`` and ``set_se_impl``.

Excitation forms (``SqueezeExcite.form``, :data:`FORMS`): how the excitation MLP's layers are executed,
on the same ``nn.Linear`` parameters (so state_dicts, checkpoints and run ids do not depend on it), for
either impl:

``linear``      the modules: ``se.mlp`` (``nn.Linear``, ``nn.ReLU``) and ``se.gate``, as always.
``conv1x1``     ``F.conv2d`` on the pooled ``[N, C, 1, 1]`` with each Linear weight viewed as
                ``[out, in, 1, 1]``, as timm's SE does with its 1x1 convolutions (cuDNN, not cuBLAS).
``functional``  ``F.linear`` on the weights, without module dispatch (fewer Python layers per call).
``mm``          ``torch.mm`` then an in-place bias add. On CUDA ``F.linear`` with a bias (``addmm``) takes
                cuBLASLt's bias-epilogue path, whose per-call host cost is the suspect in the H200 profile
                (results/gpu/2026-11-30-h200: 145-250 us of CPU per ``addmm``, about 35 us per 1x1 conv).

``form='auto'`` (the default) runs :data:`DEFAULT_FORM` of the input's device type. Every form but
``linear`` calls the gate's function directly unless a hook watches ``se.gate`` (the excitation analysis
hooks it: it then sees the same ``[N, C]`` values on every form), and falls back to ``linear`` while a
hook watches ``se.mlp`` or one of its layers. NoSqueeze's layers are 1x1 convs already: its forms other
than ``linear`` call ``F.conv2d`` on them without module dispatch.
"""

from __future__ import annotations

import warnings
import weakref
from itertools import islice
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module

# channel_dot's working set on CPU: one chunk of the product g * x, sized to stay in a core's L2 cache.
_CHUNK_BYTES = 1 << 20


def channel_dot(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(g * x).sum((2, 3))`` for two [N, C, H, W] tensors of the same layout, as [N, C].

    On CPU the product is formed a few samples at a time in a small reused buffer (it stays in cache and
    no full-size temporary is allocated: above glibc's 32 MiB mmap threshold every such allocation pays
    page faults). On other devices (a caching allocator, one kernel per op) it is the plain expression.
    """
    n, c, h, w = g.shape
    per = max(1, _CHUNK_BYTES // max(1, c * h * w * g.element_size()))
    if g.device.type != "cpu" or per >= n:
        return (g * x).sum((2, 3))
    out = torch.empty(n, c, dtype=torch.promote_types(g.dtype, x.dtype), device=g.device)
    buf = torch.empty_like(g[:per])
    for i in range(0, n, per):
        j = min(n, i + per)
        b = buf[: j - i]
        torch.mul(g[i:j], x[i:j], out=b)
        torch.sum(b, (2, 3), out=out[i:j])
    return out


def _traced() -> bool:
    """True under a TorchDispatchMode (FLOP counting, fake tensors, tracing): then only the textbook ops
    run, so that counted FLOPs are the model's and not those of an implementation shortcut."""
    if torch.compiler.is_compiling():
        return True
    try:
        from torch.utils._python_dispatch import is_in_torch_dispatch_mode
        return is_in_torch_dispatch_mode()
    except ImportError:  # older torch: no shortcuts
        return True


def spatial_mean(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """``x.mean((2, 3), keepdim)``: [N, C] (or [N, C, 1, 1]). On CPU in channels_last it is a batched GEMV
    with a ``1/HW`` row (``[1, HW] @ [N, HW, C]``, the layout's own contiguous view), which streams the
    map at memory speed; ATen's strided reduction over H, W is ~1.4x slower there. Elsewhere: ``x.mean``."""
    n, c, h, w = x.shape
    if (x.device.type == "cpu" and h * w > 1 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() and not _traced()):
        row = torch.full((1, h * w), 1.0 / (h * w), dtype=x.dtype)
        out = torch.matmul(row, x.permute(0, 2, 3, 1).reshape(n, h * w, c))
        return out.view(n, c, 1, 1) if keepdim else out.view(n, c)
    return x.mean((2, 3), keepdim=keepdim)


class _Link:
    """What the tail's backward hands to the squeeze's backward: the tail's gradient, the gate, and
    the tail's private alias of ``x`` (a buffer the squeeze's backward may write ``grad_x`` into)."""

    __slots__ = ("g", "s", "x")

    def __init__(self) -> None:
        self.g: Optional[torch.Tensor] = None
        self.s: Optional[torch.Tensor] = None
        self.x: Optional[torch.Tensor] = None


# -- buffer reuse in backward -----------------------------------------------------------------------------
# None: not calibrated yet; 0: reuse disabled; else the storage use count of the tail's private alias of x
# that the squeeze's backward sees when the graph is being freed and nothing else holds x.
_REUSE: Optional[int] = None
_PROBE: Optional[list] = None


# The two private torch functions buffer reuse needs. A torch release may drop either: their presence is
# checked once (by name: nothing runs, nothing draws from the RNG) and without them every buffer is fresh.
_PRIVATE = ((torch._C, "_storage_Use_Count"), (torch._C._autograd, "_get_current_graph_task_keep_graph"))
_HAS_PRIVATE: Optional[bool] = None


def _private_ok() -> bool:
    """True when this torch has both private functions; otherwise warn once (one line) and say False."""
    global _HAS_PRIVATE
    if _HAS_PRIVATE is None:
        missing = [f"torch._C.{'_autograd.' if owner is not torch._C else ''}{name}"
                   for owner, name in _PRIVATE if not hasattr(owner, name)]
        _HAS_PRIVATE = not missing
        if missing:
            warnings.warn(f"sebench: this torch ({torch.__version__}) lacks {', '.join(missing)}; the fused SE "
                          "tail allocates fresh buffers instead of reusing them (same numbers, more memory "
                          "traffic on CPU)", RuntimeWarning, stacklevel=2)
    return _HAS_PRIVATE


def _use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _graph_kept() -> bool:
    return torch._C._autograd._get_current_graph_task_keep_graph()


def _calibrate() -> int:
    """Run the tail once on a tiny input, with nothing else holding its buffers, and record the use
    count its backward sees: anything above it means another holder."""
    global _PROBE
    _PROBE = []
    try:
        with torch.enable_grad():
            # Constant inputs: the probe must not draw from the global RNG (a resumed run restores the
            # RNG and then calibrates; a draw here would shift its dropout masks).
            a = torch.full((1, 2, 2, 2), 0.5, requires_grad=True)
            sc = torch.full((1, 2, 2, 2), 0.25)
            x = a * 1
            link = _Link()
            s = torch.sigmoid(_AvgSqueeze.apply(x, link))
            out = _SETail.apply(x.detach(), s, sc, True, link)
            loss = (out * 1).sum()
            del x, s, out
            loss.backward()
        probe = _PROBE
    finally:
        _PROBE = None
    return probe[0] if len(probe) == 1 else 0


def _reuse_limit() -> int:
    global _REUSE
    if _REUSE is None:
        _REUSE = 0  # while calibrating (and for good if it fails)
        if not _private_ok():
            return _REUSE
        try:
            _REUSE = _calibrate()
        except Exception:  # private hooks missing or changed: allocate as usual
            _REUSE = 0
    return _REUSE


def _may_overwrite(t: torch.Tensor, *others: torch.Tensor) -> bool:
    """True when autograd frees the graph after this backward and nothing but us holds `t`'s buffer."""
    if _PROBE is not None:
        _PROBE.append(_use_count(t))
        return False
    limit = _reuse_limit()
    if not limit or _graph_kept() or _use_count(t) > limit:
        return False
    # (no .untyped_storage() on the others: a storage's Python object would keep autograd from summing
    # into them in place)
    lo, hi = _span(t)
    return all(_span(o)[1] <= lo or hi <= _span(o)[0] for o in others)


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The byte range a dense tensor covers."""
    start = t.data_ptr()
    return start, start + t.numel() * t.element_size()


class _AvgSqueeze(torch.autograd.Function):
    """``z = x.mean((2, 3), keepdim)``; its backward also adds the tail's ``g * s`` (see the module
    docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, link: _Link, keepdim: bool = False) -> torch.Tensor:
        ctx.link, ctx.shape = link, x.shape
        return spatial_mean(x, keepdim)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z: torch.Tensor):
        link = ctx.link
        g, s = link.g, link.s
        link.g = link.s = None
        x, link.x = link.x, None
        gz = (grad_z / (ctx.shape[2] * ctx.shape[3])).reshape(ctx.shape[0], ctx.shape[1], 1, 1)
        if g is None:  # the tail took no part in the loss (only z did): the squeeze's own gradient
            return gz.expand(ctx.shape), None, None
        gz, s4 = gz.to(g.dtype), s[:, :, None, None]
        if x is not None and x.dtype == g.dtype and x.shape == g.shape and _may_overwrite(x, g):
            return torch.addcmul(gz, g, s4, out=x), None, None
        return torch.addcmul(gz, g, s4), None, None


# SE module -> an alias of its tail's last training output (CPU only): see _output_buffer.
_SPARE: "weakref.WeakKeyDictionary[torch.nn.Module, torch.Tensor]" = weakref.WeakKeyDictionary()
_ALONE: Optional[int] = None


def _output_buffer(owner: Optional[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Where the tail writes its output in training: a fresh buffer like `x`, or on CPU the owner's
    previous one when nothing but this cache holds it any more.

    Why: on CPU an activation-sized buffer above glibc's mmap threshold is mapped fresh on every
    allocation and pays a page fault per 4 KiB on first touch (measured: ResNet-50's stage-1 output at
    batch 16, 51 MB, costs 35 ms to allocate and fill against 10 ms to fill a reused one). A plain
    residual block runs its add and ReLU in place in BN's output; the SE tail cannot (``x`` stays saved
    for the gate's gradient), so it is the one extra activation-sized allocation SE adds to a training
    step. The previous step's output is free again once its graph is freed and nobody kept it (checked
    with its storage's use count, as in :func:`_may_overwrite`); the step needs that memory anyway, so
    peak memory does not grow. Dropped when the module runs without autograd (:func:`_drop_spare`)."""
    global _ALONE
    if owner is None or x.device.type != "cpu" or not _private_ok():
        return torch.empty_like(x)
    if _ALONE is None:
        _ALONE = _use_count(torch.empty(1))  # a tensor nothing else holds
    spare = _SPARE.get(owner)
    if (spare is not None and spare.shape == x.shape and spare.dtype == x.dtype
            and spare.stride() == x.stride() and _use_count(spare) <= _ALONE):
        return spare.detach()  # a new tensor on the same memory: no autograd history of its own
    out = torch.empty_like(x)
    _SPARE[owner] = out.detach()
    return out


def _drop_spare(owner: torch.nn.Module) -> None:
    _SPARE.pop(owner, None)


class _SETail(torch.autograd.Function):
    """``out = [relu](x * s[:, :, None, None] [+ shortcut])`` with the backward described above.

    With a `link`, ``x`` arrives detached and its gradient is formed by the squeeze's backward. `owner`:
    the SE module, whose output buffer may be reused (see :func:`_output_buffer`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, shortcut: Optional[torch.Tensor], relu: bool,
                link: Optional[_Link], owner: Optional[torch.nn.Module] = None) -> torch.Tensor:
        s4 = s[:, :, None, None]
        if shortcut is not None and shortcut.shape != x.shape:  # a broadcast shortcut sets the shape
            out = torch.addcmul(shortcut, x, s4)
        else:
            out = _output_buffer(owner, x)
            if shortcut is None:
                torch.mul(x, s4, out=out)
            else:
                torch.addcmul(shortcut, x, s4, out=out)
        if relu:
            out.relu_()
            ctx.save_for_backward(x, s, out)
        else:
            ctx.save_for_backward(x, s)
        ctx.relu, ctx.link = relu, link
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        if ctx.relu:
            x, s, out = ctx.saved_tensors
            # grad * (out > 0), one pass, into a fresh buffer: g is also the shortcut's gradient, and
            # autograd sums that in place (with the residual branch's) only into a buffer of its own
            g = torch.ops.aten.threshold_backward(grad, out, 0)
            del out
        else:
            (x, s), g = ctx.saved_tensors, grad
        grad_x = grad_s = None
        if ctx.needs_input_grad[1]:
            grad_s = channel_dot(g, x).to(s.dtype)
        if ctx.link is not None:
            ctx.link.g, ctx.link.s, ctx.link.x = g, s, x
        elif ctx.needs_input_grad[0]:
            grad_x = g * s[:, :, None, None]
        return grad_x, grad_s, (g if ctx.needs_input_grad[2] else None), None, None, None


def _needs_grad(*tensors: Optional[torch.Tensor], module: Optional[torch.nn.Module] = None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(t is not None and t.requires_grad for t in tensors):
        return True
    return module is not None and any(p.requires_grad for p in module.parameters())


def _tail_no_grad(x: torch.Tensor, s: torch.Tensor, shortcut: Optional[torch.Tensor], relu: bool,
                  inplace: bool) -> torch.Tensor:
    s4 = s[:, :, None, None]
    own = inplace and not x._is_view() and (
        x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)) and (
        shortcut is None or shortcut.shape == x.shape)
    if shortcut is None:
        out = x.mul_(s4) if own else x * s4
    else:
        out = torch.addcmul(shortcut, x, s4, out=x) if own else torch.addcmul(shortcut, x, s4)
    return out.relu_() if relu else out


def scale_add_relu(x: torch.Tensor, s: torch.Tensor, shortcut: Optional[torch.Tensor] = None,
                   relu: bool = True) -> torch.Tensor:
    """``relu(x * s[:, :, None, None] + shortcut)`` for a [N, C] gate `s`, as one fused autograd node
    (``shortcut=None``: no add; ``relu=False``: no ReLU). Never writes into its inputs."""
    s = s.to(x.dtype)
    if _needs_grad(x, s, shortcut):
        return _SETail.apply(x, s, shortcut, relu, None)
    return _tail_no_grad(x, s, shortcut, relu, inplace=False)


IMPLS = ("fused", "reference")
DEFAULT_IMPL = "fused"

FORMS = ("linear", "conv1x1", "functional", "mm")  # see the module docstring
AUTO_FORM = "auto"
# The form a module with form 'auto' (the default) runs, per device type (others: 'linear'). Kept at
# today's nn.Linear path on both until a device measures a faster one with
# `benchmarks/se_overhead.py --forms all` (CPU: no form measured faster; CUDA: not measured yet).
DEFAULT_FORM = {"cpu": "linear", "cuda": "linear"}


def se_forward(se, x: torch.Tensor) -> torch.Tensor:
    """``SqueezeExcite.forward``: ``x * excite(x)`` on the path its `impl` and the context allow."""
    if _fused_ok(se, x):
        return _fused_tail(se, x)
    return se.reference_forward(x)


def se_tail(se, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None, *, relu: bool = False,
            inplace: bool = False, narrow: Optional[tuple] = None) -> torch.Tensor:
    """``[relu](se(x) [+ shortcut])``: the one call for code that puts a `SqueezeExcite` somewhere.

    `inplace`: `x` is the caller's temporary (without autograd the result may be written into it).
    `narrow`: ``(z, conv, bn)`` when ``x = bn(conv(z))`` with a narrower `z` (a bottleneck's last 1x1):
    in inference the excitation's first layer may then be computed from `z` (:func:`excite_through_1x1`).
    Fused when the module's impl is 'fused', `x` is a 4-d map, torch.compile is not tracing and no
    forward hook watches the module (hooks then see what they see in the unfused block); otherwise the
    module is called and the add and ReLU are plain ops."""
    if _fused_ok(se, x) and not _hooked(se):
        return _fused_tail(se, x, shortcut, relu=relu, inplace=inplace, narrow=narrow)
    out = se(x)  # through __call__: hooks on the module see its input and x * s, as always
    if shortcut is not None:
        out = out + shortcut
    return torch.relu(out) if relu else out


def _fused_ok(se, x: torch.Tensor) -> bool:
    """The fused path: asked for, a 4-d map, and not under torch.compile (which traces the textbook
    ops better than a hand-written autograd node with buffer reuse)."""
    return (getattr(se, "impl", DEFAULT_IMPL) == "fused" and x.dim() == 4
            and not torch.compiler.is_compiling())


def _hooked(se) -> bool:
    """Forward (pre-)hooks on the module, or global ones (hooks on ``.gate`` fire on either path)."""
    return bool(se._forward_hooks or se._forward_pre_hooks
                or getattr(_module, "_global_forward_hooks", None)
                or getattr(_module, "_global_forward_pre_hooks", None))


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _watched(m: torch.nn.Module) -> bool:
    """Any hook that calling `m` as a module would run: then a form must call it, not its function."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or any(getattr(_module, name, None) for name in _GLOBAL_HOOKS))


def excitation_form(se, x: torch.Tensor) -> str:
    """The form `se` runs on `x` (see the module docstring): its own, for 'auto' the default of `x`'s
    device type, and 'linear' while a hook watches the MLP or one of its layers."""
    form = getattr(se, "form", AUTO_FORM)  # modules pickled before forms existed have none
    if form == AUTO_FORM:
        form = DEFAULT_FORM.get(x.device.type, "linear")
    if form != "linear" and (_watched(se.mlp) or any(_watched(m) for m in se.mlp._modules.values())):
        return "linear"
    return form


def _squeezed(se, x: torch.Tensor, form: str, fast: bool) -> torch.Tensor:
    """The squeeze for `form`: [N, C], [N, C, 1, 1] for conv1x1, the map itself for NoSqueeze. `fast`:
    :func:`spatial_mean` (the fused paths) rather than the textbook ``x.mean``."""
    keep = form == "conv1x1"
    if se.squeeze == "avg":
        return spatial_mean(x, keep) if fast else x.mean((2, 3), keepdim=keep)
    if se.squeeze == "max":
        return x.amax((2, 3), keepdim=keep)
    return x


def _affine(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], form: str) -> torch.Tensor:
    """One excitation layer ``h @ weight.T + bias`` in `form`; a 4-d `h` (conv1x1's [N, C, 1, 1],
    NoSqueeze's map) goes through ``F.conv2d`` with a 2-d weight viewed as 1x1."""
    if h.dim() == 4:
        if weight.dim() == 2:
            weight = weight.view(weight.shape[0], weight.shape[1], 1, 1)
        return F.conv2d(h, weight, bias)
    if form == "mm":  # no addmm: on CUDA that is cuBLASLt's bias epilogue (see the module docstring)
        out = torch.mm(h, weight.t())
        return out if bias is None else out.add_(bias)
    return F.linear(h, weight, bias)


def run_excitation(se, h: torch.Tensor, form: str, start: int = 0) -> torch.Tensor:
    """The gate values from the squeezed `h`: the MLP's layers from `start` on, then the gate, in `form`
    (from :func:`excitation_form`). [N, C] ([N, C, H, W] for NoSqueeze)."""
    if form == "linear":
        if start == 0:
            h = se.mlp(h)
        else:
            for layer in list(se.mlp)[start:]:
                h = layer(h)
        return se.gate(h)
    for layer in islice(se.mlp._modules.values(), start, None):
        if isinstance(layer, torch.nn.ReLU):
            h = torch.relu_(h)  # as the module's nn.ReLU(inplace=True)
        else:
            h = _affine(h, layer.weight, layer.bias, form)
    if h.dim() == 4 and se.squeeze != "none":
        h = h.flatten(1)  # the gate is [N, C] on every form: what the excitation analysis reads
    gate = se.gate
    return gate(h) if _watched(gate) else gate.fn(h)


def excite(se, x: torch.Tensor, form: Optional[str] = None) -> torch.Tensor:
    """``SqueezeExcite.excite``: the gate values by the textbook squeeze, in the module's form."""
    form = form or excitation_form(se, x)
    if form == "linear":
        return se.gate(se.mlp(se.squeeze_input(x)))
    return run_excitation(se, _squeezed(se, x, form, fast=False), form)


def _first_layer(se) -> torch.nn.Module:
    return next(iter(se.mlp._modules.values()))


def _narrow_first(se, narrow: Optional[tuple], form: str) -> Optional[torch.Tensor]:
    """``se.mlp[0]`` on the squeeze, in `form`, from a bottleneck's narrow input when the identity holds
    (None when there is no `narrow`, or a hook watches that layer: it must see its input)."""
    if narrow is None:
        return None
    fc = _first_layer(se)
    if fc._forward_hooks or fc._forward_pre_hooks:
        return None
    z, conv, bn = narrow
    return excite_through_1x1(z, conv, bn, fc, form)


def _fused_tail(se, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None, relu: bool = False,
                inplace: bool = False, narrow: Optional[tuple] = None) -> torch.Tensor:
    """The fused ``[relu](se(x) [+ shortcut])`` (see the module docstring). The rest of the excitation
    runs through ``se.mlp`` and the ``se.gate`` module, so hooks on the gate see the same values as in the
    reference path. NoSqueeze (a per-position gate) keeps the plain ops."""
    form = excitation_form(se, x)
    if se.squeeze == "none":
        out = x * excite(se, x, form).to(x.dtype)
        out = out if shortcut is None else out + shortcut
        return torch.relu(out) if relu else out
    if not _needs_grad(x, shortcut, module=se):
        _drop_spare(se)  # evaluation: do not hold a training buffer meanwhile
        first = _narrow_first(se, narrow, form) if se.squeeze == "avg" else None
        if first is not None:
            s = run_excitation(se, first.to(x.dtype), form, start=1)
        else:
            s = run_excitation(se, _squeezed(se, x, form, fast=True), form)
        return _tail_no_grad(x, s.to(x.dtype), shortcut, relu, inplace)
    if se.squeeze == "avg" and x.requires_grad:
        link = _Link()
        s = run_excitation(se, _AvgSqueeze.apply(x, link, form == "conv1x1"), form).to(x.dtype)
        if s.requires_grad:  # always, unless the gate cut the graph: then x's gradient goes below
            return _SETail.apply(x.detach(), s, shortcut, relu, link, se)
        return _SETail.apply(x, s, shortcut, relu, None, se)
    return _SETail.apply(x, excite(se, x, form).to(x.dtype), shortcut, relu, None, se)


# fc -> (key, folded weight, folded bias): see excite_through_1x1. Weak keys: the cache dies with the module.
_FOLDED: "weakref.WeakKeyDictionary[torch.nn.Linear, tuple]" = weakref.WeakKeyDictionary()


def _fold_key(tensors: tuple, eps: float) -> Optional[tuple]:
    """What identifies the values the fold came from: the tensor objects themselves (held, so no new
    tensor can take an old one's id), and their storages and version counters (bumped by every in-place
    write: an optimizer step, load_state_dict, BN's running statistics), and BN's eps. None when a
    tensor has no version counter (an inference tensor): then nothing is cached."""
    if any(t is not None and t.is_inference() for t in tensors):
        return None
    stamp = tuple(None if t is None else (t.data_ptr(), t._version) for t in tensors)
    return tensors, stamp + (eps,)


def _same_key(a: Optional[tuple], b: Optional[tuple]) -> bool:
    return (a is not None and b is not None and a[1] == b[1]
            and all(x is y for x, y in zip(a[0], b[0])))


def excite_through_1x1(z: torch.Tensor, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d,
                       fc: torch.nn.Linear, form: str = "linear") -> Optional[torch.Tensor]:
    """``fc(bn(conv(z)).mean((2, 3)))`` without reading ``bn(conv(z))``: for a 1x1, stride-1, ungrouped
    conv and an eval-mode BN (a per-channel affine map ``a * y + b``) the spatial mean commutes with
    both, so the SE's first layer is one small matmul on the narrow input's mean,
    ``z.mean((2, 3)) @ (W_fc diag(a) W_conv)^T + (W_fc (a * bias_conv + b) + bias_fc)``:
    a pass over the bottleneck's narrow input (a quarter of the channels) instead of its wide output,
    and an [N, C/4] x [C/4, h] product instead of [N, C/4] x [C/4, C] then [N, C] x [C, h].
    The folded weight is cached per `fc` until any of the weights or BN statistics it came from changes.
    `form`: the layer is applied as that excitation form applies ``fc`` ([N, h, 1, 1] for conv1x1, else
    [N, h]). None where the identity does not hold (training-mode BN, other convs), under a dispatch mode
    (FLOP counting: the counted cost stays the model's) and while a CUDA graph is being captured: a
    cached fold would be a constant in the graph, stale once training changes the weights, and folding
    inside the graph adds about ten small kernels per block, about what the narrow read saves there.

    This is what makes SE inference nearly free in a bottleneck: the squeeze is otherwise a full read
    of the block's widest tensor, which on CPU costs about as much as the rest of the SE together."""
    if (_traced() or _capturing(z) or bn.training or bn.running_mean is None or bn.running_var is None
            or conv.kernel_size != (1, 1)
            or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1
            or z.dim() != 4 or type(conv) is not torch.nn.Conv2d
            or type(bn) is not torch.nn.BatchNorm2d or type(fc) is not torch.nn.Linear):
        return None
    key = _fold_key((conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                     fc.weight, fc.bias), bn.eps)
    hit = _FOLDED.get(fc)
    if hit is None or not _same_key(hit[0], key):
        hit = (key, *_fold(conv, bn, fc))
        if key is not None:
            _FOLDED[fc] = hit
    return _affine(spatial_mean(z, form == "conv1x1"), hit[1], hit[2], form)


def _capturing(t: torch.Tensor) -> bool:
    """True while `t`'s CUDA stream is being captured into a CUDA graph."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _fold(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, fc: torch.nn.Linear):
    """(W_fc diag(a) W_conv, W_fc (a * bias_conv + b) + bias_fc) for excite_through_1x1."""
    with torch.no_grad():
        a = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            a = a * bn.weight
        b = -bn.running_mean * a
        if conv.bias is not None:
            b = b + a * conv.bias
        if bn.bias is not None:
            b = b + bn.bias
        weight = (fc.weight * a) @ conv.weight[:, :, 0, 0]
        bias = torch.mv(fc.weight, b)
        if fc.bias is not None:
            bias = bias + fc.bias
    return weight, bias
