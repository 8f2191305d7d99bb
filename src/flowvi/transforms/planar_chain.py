r"""K consecutive planar steps (eq. 10–13) as one transform with a hand-written backward.

A chain of planar steps ``z_k = z_{k−1} + û_k tanh(a_k)``, ``a_k = w_kᵀ z_{k−1} + b_k``, with

.. math::
    \sum_k \ln |\det \partial f_k / \partial z_{k-1}| = \sum_k \ln |1 + c_k\, \mathrm{sech}^2(a_k)|,
    \qquad c_k = w_k^\top \hat u_k \qquad (12\text{–}13),

costs O(K·D) arithmetic per sample, but written step by step with autograd it dispatches some
60 tiny operations per step (forward and backward), which dominates a small network's step time.
:class:`PlanarChainTransform` runs the whole chain as one operator with a hand-written backward: the
forward loop does 4 operations per step (the only sequential part), everything that does not
depend on the running ``z`` (``c_k``, ``sech²(a_k)``, the log-dets, the parameter gradients) is
computed for all K steps at once, and the backward loop does 4 operations per step. The forward and
the backward are custom operators (``torch.ops.flowvi.planar_chain`` and ``planar_chain_backward``,
:func:`torch.library.custom_op`): under ``torch.compile`` each is one node of the graph rather than K
unrolled steps, so compiling a K = 80 training step takes as long as a K = 2 one, and a compiled
step runs the chain's eager arithmetic.

The backward (reverse-mode through eq. 10 and 12), with ``g_k = ∂L/∂z_k``, ``γ = ∂L/∂ ln|det|``,
``s_k = sech²(a_k)``, ``t_k = tanh(a_k)``, ``d_k = 1 + c_k s_k``:

- ``∂L/∂a_k = s_k (g_kᵀ û_k) − 2 γ c_k t_k s_k / d_k`` and ``g_{k−1} = g_k + (∂L/∂a_k) w_k``;
- ``∂L/∂û_k = g_k t_k + γ (s_k/d_k) w_k``, ``∂L/∂w_k = (∂L/∂a_k) z_{k−1} + γ (s_k/d_k) û_k``,
  ``∂L/∂b_k = ∂L/∂a_k``, summed over the dimensions the parameters were broadcast along.

Higher derivatives are exact, not fast: a backward run with ``create_graph=True`` (a Hessian,
``torch.autograd.functional.hessian``, gradient penalties) recomputes the chain with the per-step
differentiable operations (:func:`_reference_chain`) and differentiates that, so second derivatives
equal the reference path's. Under ``torch.func`` transforms (``jacrev``, ``vmap``, ``hessian``), which
the operators do not support, :meth:`PlanarChainTransform.call_and_ladj` runs
:func:`_reference_chain` directly. The inverse has no closed form; it falls back
to the per-step numerical inverse of :class:`~flowvi.transforms.PlanarTransform`.
:class:`~flowvi.transforms.PlanarTransform` stays the reference implementation; the tests check
that both agree in outputs, log-dets and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..validation import check_event, check_tensor, check_values
from .base import FlowTransform
from .planar import PlanarTransform, _log_sech2, planar_checks


def _chain_forward(z: Tensor, w: Tensor, u: Tensor, b: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run the chain. ``w, u``: ``(K, *pb, D)``, ``b``: ``(K, *pb)``, all broadcasting against ``z``.

    Returns ``z_K``, the stacked pre-activations ``a`` of shape ``(K, *batch)`` and, with ``keep``,
    the inputs ``z_0 … z_{K−1}`` of every step, shape ``(K, *batch, D)``.
    """
    K = w.shape[0]
    batch = torch.broadcast_shapes(z.shape, w.shape[1:])[:-1]
    a_all = z.new_empty((K, *batch))
    if not keep:  # update one buffer in place
        z = z.expand(*batch, z.shape[-1]).clone()
        for w_k, u_k, b_k, a_k in zip(w.unbind(0), u.unbind(0), b.unbind(0), a_all.unbind(0), strict=True):
            torch.add(torch.linalg.vecdot(z, w_k), b_k, out=a_k)
            z.addcmul_(u_k, torch.tanh(a_k).unsqueeze(-1))
        return z, a_all, None
    zs = z.new_empty((K, *batch, z.shape[-1]))  # z_0 … z_{K−1}, each step writes the next slot, the last z_K
    z_out = z.new_empty((*batch, z.shape[-1]))
    zs[0].copy_(z)
    z_k = (*zs.unbind(0), z_out)
    for k, (w_k, u_k, b_k, a_k) in enumerate(zip(w.unbind(0), u.unbind(0), b.unbind(0), a_all.unbind(0), strict=True)):
        torch.add(torch.linalg.vecdot(z_k[k], w_k), b_k, out=a_k)
        torch.addcmul(z_k[k], u_k, torch.tanh(a_k).unsqueeze(-1), out=z_k[k + 1])
    return z_out, a_all, zs


def _reference_chain(z: Tensor, w: Tensor, u: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The chain in plain differentiable operations (stacked layout of :func:`_chain_forward`):
    used for higher derivatives and under ``torch.func`` transforms."""
    ladj = None
    for w_k, u_k, b_k, c_k in zip(w.unbind(0), u.unbind(0), b.unbind(0), c.unbind(0), strict=True):
        a = torch.linalg.vecdot(z, w_k) + b_k
        z = z + u_k * torch.tanh(a).unsqueeze(-1)
        term = torch.log(torch.abs(1.0 + c_k * torch.exp(_log_sech2(a))))
        ladj = term if ladj is None else ladj + term
    assert ladj is not None
    return z, ladj


def _log_det_terms(a: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``t = tanh(a)``, ``s = sech²(a)`` (accurate for large ``|a|``) and ``d = 1 + c s``."""
    s = torch.exp(_log_sech2(a))
    return torch.tanh(a), s, 1.0 + c * s


def _double_differentiable_backward(needs: tuple[bool, ...], inputs: tuple[Tensor, ...], g_out: Tensor | None,
                                    g_ladj: Tensor | None) -> tuple[Tensor | None, ...]:
    wanted = [x for x, n in zip(inputs, needs, strict=True) if n]
    with torch.enable_grad():
        z_out, ladj = _reference_chain(*inputs)
        outs, grads = [], []
        for out, g in ((z_out, g_out), (ladj, g_ladj)):
            if g is not None:
                outs.append(out)
                grads.append(g)
        got = torch.autograd.grad(outs, wanted, grads, create_graph=True, allow_unused=True)
    it = iter(got)
    result = []
    for x, n in zip(inputs, needs, strict=True):
        g = next(it) if n else None
        result.append(torch.zeros_like(x) if n and g is None else g)
    return tuple(result)


def _fast_backward(needs, z, w, u, b, c, zs, t, s, d, g_out, g_ladj):  # type: ignore[no-untyped-def]
    """The hand-written first-order backward (see the module docstring)."""
    batch = zs.shape[1:]
    g = z.new_zeros(batch) if g_out is None else g_out.expand(batch)
    gam = z.new_zeros(batch[:-1]) if g_ladj is None else g_ladj.expand(batch[:-1])
    r = s / d  # ∂ ln|d| / ∂c
    da_det = (-2.0 * c) * t * r * gam  # ∂(γ ln|d|)/∂a, all steps at once
    K = w.shape[0]
    gs = zs.new_empty((K + 1, *batch))  # g_k = ∂L/∂z_k, k = 0 … K; each step writes the previous slot
    gs[K].copy_(g)
    g_k = gs.unbind(0)
    da = torch.empty_like(t)
    steps = list(zip(da.unbind(0), da_det.unbind(0), s.unbind(0), u.unbind(0), w.unbind(0), strict=True))
    for k in range(K - 1, -1, -1):
        da_k, da_det_k, s_k, u_k, w_k = steps[k]
        torch.addcmul(da_det_k, s_k, torch.linalg.vecdot(g_k[k + 1], u_k), out=da_k)
        torch.addcmul(g_k[k + 1], w_k, da_k.unsqueeze(-1), out=g_k[k])
    g = gs[0]
    gs = gs[1:]
    g_z = g.sum_to_size(z.shape) if needs[0] else None
    g_w = (da.unsqueeze(-1) * zs).sum_to_size(w.shape) if needs[1] else None
    g_u = (gs * t.unsqueeze(-1)).sum_to_size(u.shape) if needs[2] else None
    g_b = da.sum_to_size(b.shape) if needs[3] else None
    g_c = (gam * r).sum_to_size(c.shape) if needs[4] else None
    return g_z, g_w, g_u, g_b, g_c


# The chain with gradients is two custom operators (torch.library): the forward and the hand-written
# first-order backward. Eager mode runs these Python functions; under torch.compile each is one opaque node of
# the graph, so the K-step recurrence is not unrolled into it (compilation time does not grow with K) and a
# compiled step runs the same arithmetic as eager mode. Their fake (meta) implementations are the same
# functions run on fake tensors. Every output is contiguous whatever the inputs' strides (a compiled graph may
# hand the operator other layouts than eager mode or its fake tensors had); the copies are of (K, batch) sizes.
_Six = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _chain(z: Tensor, w: Tensor, u: Tensor, b: Tensor, c: Tensor) -> _Six:
    """``(z_K, Σ_k ln|d_k|, z_0 … z_{K−1}, t, s, d)``: the chain's output and log-det, and what its backward reads."""
    z_out, a, zs = _chain_forward(z, w, u, b, keep=True)
    assert zs is not None
    t, s, d = _log_det_terms(a, c)
    ladj = torch.log(torch.abs(d)).sum(0)
    return z_out.contiguous(), ladj.contiguous(), zs, t.contiguous(), s.contiguous(), d.contiguous()


def _chain_backward(z: Tensor, w: Tensor, u: Tensor, b: Tensor, c: Tensor, zs: Tensor, t: Tensor, s: Tensor, d: Tensor,
                    g_out: Tensor | None, g_ladj: Tensor | None, needs: list[bool]) -> list[Tensor]:
    """The gradients of the inputs ``z, w, u, b, c`` flagged in ``needs`` (an empty tensor for the others)."""
    with torch.no_grad():
        grads = _fast_backward(needs, z, w, u, b, c, zs, t, s, d, g_out, g_ladj)
    return [z.new_empty(0) if g is None else g.contiguous() for g in grads]


_chain_op = torch.library.custom_op("flowvi::planar_chain", _chain, mutates_args=())
_chain_op.register_fake(_chain)
_chain_backward_op = torch.library.custom_op("flowvi::planar_chain_backward", _chain_backward, mutates_args=())
_chain_backward_op.register_fake(_chain_backward)


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: tuple[Tensor, ...]) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(*inputs, *output[2:])
    ctx.mark_non_differentiable(*output[2:])


def _backward(ctx, g_out: Tensor | None, g_ladj: Tensor | None, *_: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[no-untyped-def]
    saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad)
    if torch.is_grad_enabled():  # create_graph=True: a differentiable backward through the reference chain
        return _double_differentiable_backward(tuple(needs), saved[:5], g_out, g_ladj)
    grads = _chain_backward_op(*saved, g_out, g_ladj, needs)
    return tuple(g if n else None for g, n in zip(grads, needs, strict=True))


_chain_op.register_autograd(_backward, setup_context=_setup_context)


class PlanarChainTransform(FlowTransform):
    """K planar steps ``f_K ∘ … ∘ f_1`` (eq. 10) with stacked, *constrained* parameters.

    Equivalent to ``ComposeFlow([PlanarTransform(w[..., k, :], u_hat[..., k, :], b[..., k]) for k])``
    but fast (see the module docstring).

    Args:
        w, u_hat: ``(..., K, D)``; step ``k`` uses ``w[..., k, :]``; ``wᵀû ≥ −1`` per step
            (see :func:`~flowvi.transforms.planar_constrain`). Leading dimensions (one parameter set
            per data point) broadcast against the input's batch dimensions.
        b: ``(..., K)``.
        uw: ``(..., K)``, the values of ``w_kᵀû_k`` when known exactly from the constraint
            (:func:`~flowvi.transforms.planar_reparameterize`); computed from ``w`` and ``û`` otherwise.
        validate_args: check the parameters (finite, ``wᵀû ≥ −1``); ``None`` follows
            :func:`flowvi.set_validation`.

    >>> w, u, b = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3)      # K = 3 steps, D = 2
    >>> u_hat = fv.planar_constrain(u, w)
    >>> chain = fv.PlanarChainTransform(w, u_hat, b)
    >>> z = torch.randn(5, 2)
    >>> y, ladj = chain.call_and_ladj(z)
    >>> y_ref, ladj_ref = fv.ComposeFlow(chain.steps()).call_and_ladj(z)    # the per-step reference
    >>> bool(torch.allclose(y, y_ref, atol=1e-6)), bool(torch.allclose(ladj, ladj_ref, atol=1e-6))
    (True, True)
    """

    def __init__(
        self, w: Tensor, u_hat: Tensor, b: Tensor, uw: Tensor | None = None, cache_size: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        for name, value in (("w", w), ("u_hat", u_hat), ("b", b)):
            check_tensor(name, value)
        if w.dim() < 2 or w.shape != u_hat.shape:
            raise ValueError(
                f"w and u_hat must have the same shape (..., K, D), got {tuple(w.shape)} and {tuple(u_hat.shape)}"
            )
        for name, value in (("b", b), ("uw", uw)):
            if value is not None and value.shape != w.shape[:-1]:
                raise ValueError(f"{name} must have shape {tuple(w.shape[:-1])} (..., K), got {tuple(value.shape)}")
        self.dim = w.shape[-1]
        self.w, self.u_hat, self.b = w, u_hat, b
        self.uw = torch.linalg.vecdot(w, u_hat) if uw is None else uw
        check_values(lambda: planar_checks(w, u_hat, b, self.uw), enabled=self.validate_args)

    @property
    def K(self) -> int:
        return self.w.shape[-2]

    def steps(self) -> list[PlanarTransform]:
        """The chain as per-step reference transforms ``f_1 … f_K``."""
        return [
            PlanarTransform(self.w[..., k, :], self.u_hat[..., k, :], self.b[..., k], uw=self.uw[..., k],
                            validate_args=self.validate_args)
            for k in range(self.K)
        ]

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        dtype = torch.promote_types(z.dtype, self.w.dtype)  # as torch's own ops promote (one dtype for the kernel)
        # step axis first, then the parameters' batch dims padded to the input's: (K, 1…, *pb, D)
        n_pad = max(z.dim() - self.w.dim() + 1, 0)
        w, u = (x.movedim(-2, 0).reshape(x.shape[-2:-1] + (1,) * n_pad + x.shape[:-2] + x.shape[-1:])
                for x in (self.w, self.u_hat))
        b, c = (x.movedim(-1, 0).reshape(x.shape[-1:] + (1,) * n_pad + x.shape[:-1]) for x in (self.b, self.uw))
        z, w, u, b, c = (x.to(dtype) for x in (z, w, u, b, c))
        if self.K == 0:
            return z, z.new_zeros(z.shape[:-1])
        if torch._C._are_functorch_transforms_active():  # jacrev, vmap, ...: trace plain operations
            return _reference_chain(z, w, u, b, c)
        if torch.is_grad_enabled() and any(x.requires_grad for x in (z, w, u, b, c)):
            # no copies into the step-major layout: each step reads w_k, u_k as strided views (rows of D
            # contiguous numbers), which gives the same results as contiguous ones at no copy
            return _chain_op(z, w, u, b, c)[:2]
        z_out, a, _ = _chain_forward(z, w, u, b, keep=False)
        _, _, d = _log_det_terms(a, c)
        return z_out, torch.log(torch.abs(d)).sum(0)

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        for step in reversed(self.steps()):
            y = step._inverse(y)
        return y
