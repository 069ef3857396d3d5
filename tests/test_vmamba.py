"""VMamba encoder: shapes, presets, input checks, mask token, drop path, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import VMamba, vmamba_base, vmamba_small, vmamba_tiny


def count(model):
    return sum(p.numel() for n, p in model.named_parameters() if n != "masked_embed")


def test_preset_parameter_counts():
    assert count(vmamba_small()) == 49_380_096
    tiny, base = vmamba_tiny(), vmamba_base()
    assert tiny.depths == (2, 2, 5, 2) and tiny.dims == (96, 192, 384, 768)
    assert base.depths == (2, 2, 15, 2) and base.dims == (128, 256, 512, 1024)
    assert count(tiny) < count(vmamba_small()) < count(base)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_shapes(in_channels, size):
    enc = VMamba(depths=(1, 1, 1, 1), dims=(16, 24, 32, 48), in_channels=in_channels).eval()
    x = torch.randn(2, in_channels, *size)
    maps, scores = enc(x, return_attention=True)
    h, w = size
    assert [tuple(m.shape) for m in maps] == [(2, c, h // 2 ** (i + 2), w // 2 ** (i + 2)) for i, c in enumerate((16, 24, 32, 48))]
    n_last = (h // 32) * (w // 32)
    assert scores.shape == (2, n_last)
    assert enc.forward_tokens(x).shape == (2, 1 + n_last, 48)
    assert enc.attention_map(x).shape == (2, n_last, n_last)


def test_rejects_sizes_not_divisible_by_32():
    enc = VMamba(depths=(1, 1, 1, 1), dims=8)
    with pytest.raises(ValueError, match="divisible by 32, got 70 x 64.*DivisiblePadd"):
        enc(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match=r"expects \[B, 3, H, W\]"):
        enc(torch.randn(1, 1, 64, 64))


def test_mask_token_on_any_dividing_grid():
    enc = VMamba(depths=(1, 1, 1, 1), dims=8).eval()
    with torch.no_grad():
        enc.masked_embed.fill_(3.0)
    x = torch.randn(1, 3, 64, 64)  # stem grid 16 x 16
    plain = enc.forward_tokens(x)
    none = enc.forward_tokens(x, mask=torch.zeros(1, 4, 4, dtype=torch.bool))
    torch.testing.assert_close(plain, none)
    for grid in [(2, 2), (4, 4), (16, 16), (2, 8)]:
        mask = torch.zeros(1, *grid, dtype=torch.bool)
        mask[0, 0, 0] = True
        assert not torch.allclose(enc.forward_tokens(x, mask=mask), plain)
    with pytest.raises(ValueError, match="divid"):
        enc.forward_tokens(x, mask=torch.zeros(1, 3, 3, dtype=torch.bool))


def test_mask_token_receives_gradient():
    enc = VMamba(depths=(1, 1, 1, 1), dims=8)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[:, 0, 1] = True
    # (a plain sum of LayerNorm outputs is constant, so weight the tokens)
    tokens = enc.forward_tokens(torch.randn(2, 3, 64, 64), mask=mask)
    (tokens * torch.randn_like(tokens)).sum().backward()
    assert enc.masked_embed.grad.abs().sum() > 0


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    enc = VMamba(depths=(2, 2, 2, 2), dims=8, drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    enc.eval()
    torch.testing.assert_close(enc(x)[-1], enc(x)[-1])
    enc.train()
    assert not torch.allclose(enc(x)[-1], enc(x)[-1])


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    plain = VMamba(depths=(1, 1, 2, 1), dims=8)
    ckpt = VMamba(depths=(1, 1, 2, 1), dims=8, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, ckpt):
        model.train()
        sum(m.square().mean() for m in model(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_forced_backends_agree_in_the_encoder():
    torch.manual_seed(0)
    fast = VMamba(depths=(1, 1, 1, 1), dims=8, scan_backend="torch").eval()
    ref = VMamba(depths=(1, 1, 1, 1), dims=8, scan_backend="reference").eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(fast(x)[-1], ref(x)[-1], rtol=1e-5, atol=1e-5)


def test_accepts_monai_metatensor():
    from monai.data import MetaTensor

    enc = VMamba(depths=(1, 1, 1, 1), dims=8).eval()
    x = torch.randn(1, 3, 64, 64)
    maps, scores = enc(MetaTensor(x), return_attention=True)
    assert type(maps[-1]) is torch.Tensor
    torch.testing.assert_close(maps[-1], enc(x)[-1])


def test_channel_last_memory_same_numbers_as_channel_first():
    """The encoder runs channel-last inside; its blocks give the same numbers on channel-first storage."""
    from openus_monai.networks import Linear2d

    torch.manual_seed(0)
    enc = VMamba(depths=(1, 1, 2, 1), dims=16).eval()
    maps = enc(torch.randn(2, 3, 64, 64))
    assert all(m.is_contiguous(memory_format=torch.channels_last) for m in maps)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in enc.modules() if isinstance(m, torch.nn.Conv2d))
    block, x = enc.layers[1].blocks[0], torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        last = block(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(last, block(x), rtol=1e-5, atol=1e-5)
    proj = Linear2d(32, 24)
    torch.testing.assert_close(proj(x.contiguous(memory_format=torch.channels_last)), proj(x), rtol=1e-5, atol=1e-5)


def test_bfloat16_autocast_close_to_float32():
    """bf16 inference (autocast: bf16 GEMMs and convolutions, the scan in float32) within bf16's own tolerance."""
    torch.manual_seed(0)
    enc = VMamba(depths=(1, 1, 2, 1), dims=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = enc(x)
    for f, h in zip(full, half):
        assert h.dtype in (torch.bfloat16, torch.float32)
        err = (h.float() - f).norm() / f.norm()
        assert err < 2e-2, f"relative error {err:.3g}"
        # and clearly not float32: bf16 has 8 mantissa bits
        assert err > 1e-5


def test_weights_cast_for_autocast_give_autocasts_outputs():
    """Casting the GEMM and convolution weights once gives the same outputs as autocast casting them per call,
    leaves the float32 parameters (norms, the scan's) float32, and rejects a non-autocast dtype."""
    import copy

    from openus_monai.networks import SS2D, cast_weights_for_autocast

    torch.manual_seed(0)
    enc = VMamba(depths=(1, 1, 2, 1), dims=32).eval()
    cast = cast_weights_for_autocast(copy.deepcopy(enc))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = enc(x), cast(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    ss2d = next(m for m in cast.modules() if isinstance(m, SS2D))
    assert ss2d.in_proj.weight.dtype == ss2d.x_proj_weight.dtype == torch.bfloat16
    assert ss2d.out_norm.weight.dtype == ss2d.A_logs.dtype == ss2d.dt_projs_weight.dtype == torch.float32
    assert ss2d.conv2d.weight.is_contiguous(memory_format=torch.channels_last)  # the layout is kept
    with pytest.raises(ValueError, match="autocast dtype"):
        cast_weights_for_autocast(enc, torch.float64)
