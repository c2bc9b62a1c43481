"""Layers for seed-batched training whose vmap would be slow or missing, as autograd Functions.

Under `torch.vmap` a Function's `vmap` rule receives the stacked tensors of all seeds at once
(`torch.autograd.Function.vmap`): here the rule moves the seed dimension to the front and calls the
same Function on the plain tensors, whose forward and backward are written for any leading
dimensions. Three layers need it:

- the GRU recurrence: `nn.GRU` has no vmap rule (`aten::gru.input`), and unrolled into per-step
  tensor operations it records ~30 autograd nodes per time step; `GRURecurrence` runs the time loop
  without autograd and back-propagates through time by hand (one pass, the same equations);
- `Conv1d`: vmap turns it into a grouped convolution whose oneDNN backward costs ~3x the forward;
  `Conv1dIm2col` is the same convolution as one batched matmul over im2col columns;
- `Conv2d`: the same grouped convolution; `Conv2dPerSeed` runs each seed's convolution and its
  backward as a one-seed network does (the kernels LeNet-5's bare loop runs), one call per seed,
  which a traced step replays without Python.

All are tested against PyTorch's own layers (outputs and gradients) in tests/test_batched.py.
"""
from __future__ import annotations

import torch


def _front(x: torch.Tensor, dim, size: int) -> torch.Tensor:
    """`x` with its vmapped dimension first (expanded when the argument is not vmapped)."""
    return x.movedim(dim, 0) if dim is not None else x.unsqueeze(0).expand(size, *x.shape)


class GRURecurrence(torch.autograd.Function):
    """h_t of a GRU from its input projections: gi (..., B, T, 3H) = x W_ih^T + b_ih, w_hh (..., 3H, H),
    b_hh (..., 3H), zero initial state; returns (..., B, T, H). The gate order and equations are
    `nn.GRU`'s: r, z = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r * gh_n), h = (1 - z) n + z h."""

    @staticmethod
    def forward(gi, w_hh, b_hh):
        *lead, b, steps, three_h = gi.shape
        hid = three_h // 3
        w_hh, b_hh = w_hh.reshape(-1, three_h, hid), b_hh.reshape(-1, 1, three_h)
        g = w_hh.shape[0]
        gi = gi.reshape(g, b, steps, three_h).permute(2, 0, 1, 3)  # time first: each step's slice is contiguous
        gi_rz, gi_n = gi[..., :2 * hid].contiguous(), gi[..., 2 * hid:].contiguous()
        w_t = w_hh.transpose(1, 2)
        hs = gi.new_empty(steps + 1, g, b, hid)  # hs[0] = h_0 = 0, hs[t + 1] = h_t
        hs[0].zero_()
        rz = gi.new_empty(steps, g, b, 2 * hid)
        n = gi.new_empty(steps, g, b, hid)
        ghn = gi.new_empty(steps, g, b, hid)
        for t in range(steps):
            h = hs[t]
            gh = torch.baddbmm(b_hh, h, w_t)  # (G, B, 3H)
            torch.sigmoid(gi_rz[t] + gh[..., :2 * hid], out=rz[t])
            ghn[t] = gh[..., 2 * hid:]
            torch.tanh(torch.addcmul(gi_n[t], rz[t, ..., :hid], ghn[t]), out=n[t])
            torch.addcmul(n[t], rz[t, ..., hid:], h - n[t], out=hs[t + 1])  # (1 - z) n + z h
        out = hs[1:].permute(1, 2, 0, 3).reshape(*lead, b, steps, hid)
        return out, hs, rz, n, ghn

    @staticmethod
    def setup_context(ctx, inputs, output):
        gi, w_hh, b_hh = inputs
        _, hs, rz, n, ghn = output
        ctx.save_for_backward(w_hh, hs, rz, n, ghn)
        ctx.shapes = gi.shape, b_hh.shape
        ctx.mark_non_differentiable(hs, rz, n, ghn)
        ctx.set_materialize_grads(False)  # else autograd fills zero gradients of the saved states every step

    @staticmethod
    def backward(ctx, grad_out, *_):
        w_hh, hs, rz, n, ghn = ctx.saved_tensors
        gi_shape, b_shape = ctx.shapes
        steps, g, b, hid = n.shape
        w = w_hh.reshape(g, 3 * hid, hid)
        dout = grad_out.reshape(g, b, steps, hid).permute(2, 0, 1, 3).contiguous()
        r, z = rz[..., :hid], rz[..., hid:].contiguous()
        # every factor that does not depend on the incoming gradient, for all steps at once
        to_an = (1 - z) * (1 - n * n)  # d a_n / d h_t, through (1 - z) and tanh
        to_az = (hs[:-1] - n) * z * (1 - z)  # d a_z / d h_t
        to_ar = ghn * r * (1 - r)  # d a_r / d a_n
        r = r.contiguous()
        dgh = dout.new_empty(steps, g, b, 3 * hid)  # d(loss)/d(h W_hh^T + b_hh) per step
        dan = dout.new_empty(steps, g, b, hid)  # d(loss)/d a_n, the n gate's pre-activation
        dh = torch.zeros_like(dout[0])
        for t in reversed(range(steps)):
            dh = dh + dout[t]
            torch.mul(dh, to_an[t], out=dan[t])
            torch.mul(dan[t], to_ar[t], out=dgh[t, ..., :hid])
            torch.mul(dh, to_az[t], out=dgh[t, ..., hid:2 * hid])
            torch.mul(dan[t], r[t], out=dgh[t, ..., 2 * hid:])
            dh = torch.baddbmm(dh * z[t], dgh[t], w)
        h_prev = hs[:-1].reshape(steps, g, b, hid).permute(1, 0, 2, 3).reshape(g, steps * b, hid)
        dgh_flat = dgh.permute(1, 0, 2, 3).reshape(g, steps * b, 3 * hid)
        d_w = torch.bmm(dgh_flat.transpose(1, 2), h_prev).reshape(w_hh.shape)
        d_b = dgh_flat.sum(1).reshape(b_shape)
        dgi = torch.cat([dgh[..., :2 * hid], dan], -1)  # the r, z pre-activations take gi and gh alike
        d_gi = dgi.permute(1, 2, 0, 3).reshape(gi_shape)
        return d_gi, d_w, d_b

    @staticmethod
    def vmap(info, in_dims, gi, w_hh, b_hh):
        args = [_front(a, d, info.batch_size) for a, d in zip((gi, w_hh, b_hh), in_dims)]
        out = GRURecurrence.apply(*args)
        return out, (0, None, None, None, None)  # the saved tensors hold seeds x directions in one dim


class Conv1dIm2col(torch.autograd.Function):
    """`F.conv1d(x, weight, bias, stride, padding)` for x (..., B, C, L), weight (..., O, C, k),
    bias (..., O): one batched matmul over the im2col columns (..., B * L_out, k * C)."""

    @staticmethod
    def forward(x, weight, bias, stride: int, padding: int):
        *lead, b, c, length = x.shape
        o, k = weight.shape[-3], weight.shape[-1]
        x = x.reshape(-1, b, c, length).transpose(2, 3)  # (G, B, L, C): channels last, columns by slicing
        g = x.shape[0]
        xp = x.new_empty(g, b, length + 2 * padding, c)
        xp[:, :, :padding] = 0  # only the padding is zeroed: the rest is the input
        xp[:, :, padding + length:] = 0
        xp[:, :, padding:padding + length] = x
        lout = (length + 2 * padding - k) // stride + 1
        # (G, B, Lout, k, C) windows as a view, copied once into the columns: tap-major, as the weight is ordered below
        cols = xp.unfold(2, k, stride).transpose(3, 4).reshape(g, b * lout, k * c)
        w = weight.reshape(-1, o, c, k).transpose(2, 3).reshape(-1, o, k * c)  # (G, O, k * C), the columns' order
        if w.shape[0] != g:
            w = w.expand(g, -1, -1)
        out = torch.baddbmm(bias.reshape(-1, 1, o), cols, w.transpose(1, 2))  # (G, B * Lout, O)
        out = out.reshape(g, b, lout, o).transpose(2, 3)  # (G, B, O, Lout) as a view of channels-last memory
        return out.reshape(*lead, b, o, lout) if lead else out[0], cols

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding = inputs
        ctx.save_for_backward(weight, output[1])
        ctx.x_shape, ctx.bias_shape, ctx.stride, ctx.padding = x.shape, bias.shape, stride, padding
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # else autograd fills a zero gradient of the columns every step

    @staticmethod
    def backward(ctx, grad_out, _):
        weight, cols = ctx.saved_tensors
        *lead, b, c, length = ctx.x_shape
        o, k = weight.shape[-3], weight.shape[-1]
        g, stride, padding = cols.shape[0], ctx.stride, ctx.padding
        lout = grad_out.shape[-1]
        dout = grad_out.reshape(g, b, o, lout).transpose(2, 3).reshape(g, b * lout, o)
        d_w = torch.bmm(dout.transpose(1, 2), cols)  # (G, O, k * C)
        d_b = dout.sum(1)
        lead_w = weight.shape[:-3]
        d_weight = d_w.reshape(g, o, k, c).transpose(2, 3)
        if not lead_w:  # one weight for all groups: sum over them
            d_weight, d_b = d_weight.sum(0), d_b.sum(0)
        d_weight, d_b = d_weight.reshape(weight.shape), d_b.reshape(ctx.bias_shape)
        d_x = None
        if ctx.needs_input_grad[0]:  # col2im: each of the k taps adds its columns back at its strided positions
            w = weight.reshape(-1, o, c, k).transpose(2, 3).reshape(-1, o, k * c)
            dcols = torch.bmm(dout, w.expand(g, -1, -1) if w.shape[0] != g else w).reshape(g, b, lout, k, c)
            dxp = dcols.new_zeros(g, b, length + 2 * padding, c)
            for j in range(k):
                dxp[:, :, j:j + stride * (lout - 1) + 1:stride] += dcols[:, :, :, j]
            d_x = dxp[:, :, padding:padding + length].transpose(2, 3).reshape(ctx.x_shape)
        return d_x, d_weight, d_b, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, stride, padding):
        x_dim, w_dim, b_dim = in_dims[:3]
        if x_dim is None:  # every seed sees the same batch: one input for all weights
            x = x.unsqueeze(0)
        else:
            x = x.movedim(x_dim, 0)
        weight, bias = _front(weight, w_dim, info.batch_size), _front(bias, b_dim, info.batch_size)
        if x.shape[0] == 1:
            x = x.expand(info.batch_size, *x.shape[1:])
        out, cols = Conv1dIm2col.apply(x, weight, bias, stride, padding)
        return (out, cols), (0, None)


def _conv2d_backward(g, x, w, needs, stride, padding, dilation, groups):
    """The input, weight and bias gradients of one `F.conv2d` (those `needs` asks for, else None). For a plain
    convolution (stride 1, no dilation or groups) the weight's is itself a convolution, of the input's
    channels with the output gradient's over the batch: oneDNN's weight-gradient kernel took 2.3x as long
    on LeNet-5's C1 (1 input channel) and 1.7x on C5 (1x1 output) on one thread of this project's CPU."""
    plain = tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
    dx = dw = None
    if needs[0] or (needs[1] and not plain):
        dx, dw, _ = torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, dilation, False, [0, 0], groups,
                                                        [needs[0], needs[1] and not plain, False])
    if needs[1] and plain:
        dw = torch.nn.functional.conv2d(x.transpose(0, 1), g.transpose(0, 1), padding=padding).transpose(0, 1)
    return dx, dw, g.sum((0, 2, 3)) if needs[2] else None


def _seed_views(x, weight):
    """Weights (..., O, C, kh, kw) as (S, O, C, kh, kw) and inputs as (S, B, C, H, W), a shared
    (B, C, H, W) input expanded (a view) to every seed; and whether it was shared."""
    w = weight.reshape(-1, *weight.shape[-4:])
    shared = x.ndim == 4
    return w, (x.unsqueeze(0).expand(w.shape[0], *x.shape) if shared else x.reshape(-1, *x.shape[-4:])), shared


class Conv2dPerSeed(torch.autograd.Function):
    """`F.conv2d(x, weight, bias, stride, padding, dilation, groups)` for weight (..., O, C/groups, kh, kw),
    bias (..., O) or None and x (..., B, C, H, W), or x (B, C, H, W) for every weight alike: one convolution
    per leading index, forward and backward (`aten.convolution_backward`)."""

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        if weight.ndim == 4:
            return torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)
        w, xs, _ = _seed_views(x, weight)
        b = bias.reshape(-1, bias.shape[-1]) if bias is not None else [None] * w.shape[0]
        out = torch.stack([torch.nn.functional.conv2d(xs[i], w[i], b[i], stride, padding, dilation, groups)
                           for i in range(w.shape[0])])
        return out.reshape(*weight.shape[:-4], *out.shape[1:])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.conv = bias is not None, (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        if weight.ndim == 4:
            return (*_conv2d_backward(grad_out, x, weight, needs, *ctx.conv), None, None, None, None)
        w, xs, shared = _seed_views(x, weight)
        g = grad_out.reshape(w.shape[0], *grad_out.shape[-4:])
        parts = [_conv2d_backward(g[i], xs[i], w[i], needs, *ctx.conv) for i in range(w.shape[0])]
        dx = dw = db = None
        if needs[0]:
            dx = torch.stack([p[0] for p in parts])
            dx = dx.sum(0) if shared else dx.reshape(x.shape)
        if needs[1]:
            dw = torch.stack([p[1] for p in parts]).reshape(weight.shape)
        if needs[2]:
            db = torch.stack([p[2] for p in parts]).reshape(weight.shape[:-4] + weight.shape[-4:-3])
        return dx, dw, db, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
        x_dim, w_dim, b_dim = in_dims[:3]
        x = x.movedim(x_dim, 0) if x_dim is not None else x  # unbatched: every seed sees the same batch
        weight = _front(weight, w_dim, info.batch_size)
        bias = _front(bias, b_dim, info.batch_size) if bias is not None else None
        return Conv2dPerSeed.apply(x, weight, bias, stride, padding, dilation, groups), 0
