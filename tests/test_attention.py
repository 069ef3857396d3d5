"""Teacher attention: O(L) scores against the full map and a float64 brute force; stability."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import ScanParams, attention_map, attention_scores

from _helpers import rel_err


def random_params(batch=2, heads=4, dim=6, d_state=1, height=3, width=5, dt_scale=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    length = height * width
    delta = torch.nn.functional.softplus(torch.randn(batch, heads, dim, length, generator=g) * dt_scale).to(dtype)
    A = -torch.exp(torch.randn(heads, dim, d_state, generator=g)).to(dtype)
    B = torch.randn(batch, heads, d_state, length, generator=g).to(dtype)
    C = torch.randn(batch, heads, d_state, length, generator=g).to(dtype)
    return ScanParams(delta, A, B, C, height, width)


def brute_force_map(params: ScanParams) -> torch.Tensor:
    """The definition, in float64, one (i, j) at a time through explicit token orders."""
    delta, A, B, C = (t.double() for t in params)
    batch, heads, dim, length = delta.shape
    h, w = params.height, params.width
    tokens = torch.arange(length).view(h, w)
    orders = [tokens.flatten(), tokens.t().flatten(), tokens.flatten().flip(0), tokens.t().flatten().flip(0)]
    S = torch.cumsum(delta[..., None] * A[None, :, :, None, :], dim=3)  # [B, K, D, L, N]
    out = torch.zeros(batch, length, length, dtype=torch.float64)
    for k in range(heads):
        for i in range(length):
            for j in range(i + 1):
                val = (C[:, k, :, i][:, None] * B[:, k, :, j][:, None] * torch.exp(S[:, k, :, i] - S[:, k, :, j])).sum(-1).mean(-1)
                out[:, orders[k][i], orders[k][j]] += val
    return out


@pytest.mark.parametrize("d_state", [1, 3])
def test_full_map_matches_definition(d_state):
    params = random_params(d_state=d_state)
    assert rel_err(attention_map(params, normalize=False), brute_force_map(params)) < 1e-5


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 7), (4, 2)])
def test_scores_equal_column_mean_of_full_map(shape):
    params = random_params(height=shape[0], width=shape[1])
    scores = attention_scores(params)
    assert scores.shape == (2, shape[0] * shape[1])
    assert rel_err(scores, attention_map(params, normalize=False).mean(1)) < 1e-5


def test_scores_long_sequence_large_steps_float64_oracle():
    """56 x 56 tokens with step sizes up to ~1e3: finite and equal to a float64 evaluation."""
    params = random_params(batch=1, heads=4, dim=2, height=56, width=56, dt_scale=300.0, seed=3)
    scores = attention_scores(params)
    assert torch.isfinite(scores).all()
    double = attention_scores(ScanParams(*(t.double() for t in params), params.height, params.width))
    assert rel_err(scores, double) < 1e-5


def test_scores_extreme_decay_finite():
    params = random_params(batch=1, height=32, width=32, dt_scale=1e3)
    delta, A, B, C = params
    huge = ScanParams(delta, A * 1e4, B, C, 32, 32)  # A_logs large
    assert torch.isfinite(attention_scores(huge)).all()
    assert torch.isfinite(attention_map(ScanParams(delta[:, :, :1], A, B, C, 32, 32))).all()


def test_scores_differentiable():
    params = random_params()
    delta = params[0].clone().requires_grad_(True)
    attention_scores(ScanParams(delta, *params[1:], params.height, params.width)).sum().backward()
    assert torch.isfinite(delta.grad).all() and delta.grad.abs().sum() > 0
