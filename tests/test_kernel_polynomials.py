"""The fused scan kernel's polynomials: the coefficients in ``csrc/fused_scan.c`` are the ones
``benchmarks/kernel_polynomials.py`` fits, and evaluated in float32 as the kernel does they keep ``exp`` and the
step sizes' softplus within a few ulp of float64."""

from __future__ import annotations

import re

import numpy as np

from benchmarks.kernel_polynomials import exp_nonpos32, fit_exp, fit_log1p, softplus32
from openus_monai.networks.ops.scan_fused import SOURCE


def _horner_coefficients(function: str) -> np.ndarray:
    """The literals of ``function``'s Horner loop (``float p = c; p = p * x + c; ...``), lowest degree first."""
    body = re.search(rf"static inline float {function}\(.*?\n}}", SOURCE.read_text(), re.S).group(0)
    first = re.search(r"float p = ([-+0-9.e]+)f;", body).group(1)
    rest = re.findall(r"p = p \* \w+ \+ ([-+0-9.e]+)f;", body)
    return np.array([float(c) for c in [first, *rest]][::-1])


def test_kernel_coefficients_are_the_fitted_ones():
    np.testing.assert_allclose(_horner_coefficients("exp_nonpos"), fit_exp(4), rtol=1e-8)
    np.testing.assert_allclose(_horner_coefficients("log1p_unit"), fit_log1p(4), rtol=1e-8)


def _exp_error(p: np.ndarray) -> float:
    x = np.linspace(-87, 0, 400_001, dtype=np.float32)
    return float(np.abs(exp_nonpos32(x, p) / np.exp(x.astype(np.float64)) - 1).max())


def test_float32_accuracy_of_exp_and_softplus():
    p, q = _horner_coefficients("exp_nonpos"), _horner_coefficients("log1p_unit")
    assert _exp_error(p) < 1.5e-7
    x = np.linspace(-30, 30, 400_001, dtype=np.float32)
    exact = np.maximum(x.astype(np.float64), 0) + np.log1p(np.exp(-np.abs(x.astype(np.float64))))
    assert np.abs(softplus32(x, p, q) / exact - 1).max() < 4e-7
    assert _exp_error(fit_exp(2)) > 1.5e-6  # a polynomial two degrees short fails the bound by far
