"""Straight-through estimators for thresholds (Rajamanoharan et al. 2024, "Jumping Ahead").

A threshold's true gradient is zero almost everywhere. These functions compute the exact
forward pass and, for the threshold only, the pseudo-derivatives of the paper with a rectangle
kernel ``K(u) = 1{|u| < 1/2}`` of width ``bandwidth``:

    d/d theta  z * H(z - theta)  :=  -(theta / eps) * K((z - theta) / eps)
    d/d theta  H(z - theta)      :=  -(1 / eps) * K((z - theta) / eps)

Gradients with respect to z are the true ones (H(z - theta) and 0 respectively). Threshold
gradients are accumulated in float32 whatever the activations' dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.jumprelu import near_threshold


class JumpReLUFunction(torch.autograd.Function):
    """``z * (z > theta)`` with a straight-through gradient for ``theta``."""

    @staticmethod
    def forward(ctx, pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_NF * (pre_NF > threshold_F)

    @staticmethod
    def backward(ctx, grad_NF: Tensor):
        pre_NF, threshold_F = ctx.saved_tensors
        grad_pre = grad_NF * (pre_NF > threshold_F)
        window = near_threshold(pre_NF, threshold_F, ctx.bandwidth)
        grad_threshold = -(threshold_F.float() / ctx.bandwidth) * (grad_NF.float() * window).sum(0)
        return grad_pre, grad_threshold.to(threshold_F.dtype), None


class StepFunction(torch.autograd.Function):
    """``H(z - theta)`` (as z's dtype) with a straight-through gradient for ``theta``."""

    @staticmethod
    def forward(ctx, pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_NF > threshold_F).to(pre_NF.dtype)

    @staticmethod
    def backward(ctx, grad_NF: Tensor):
        pre_NF, threshold_F = ctx.saved_tensors
        window = near_threshold(pre_NF, threshold_F, ctx.bandwidth)
        grad_threshold = -(grad_NF.float() * window).sum(0) / ctx.bandwidth
        # None: z gets no gradient through the step (the true derivative is 0).
        return None, grad_threshold.to(threshold_F.dtype), None


def jumprelu(pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
    return JumpReLUFunction.apply(pre_NF, threshold_F, bandwidth)


def step(pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
    return StepFunction.apply(pre_NF, threshold_F, bandwidth)
