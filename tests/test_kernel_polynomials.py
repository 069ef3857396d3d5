"""The fused scan kernel's polynomials: the coefficients in ``csrc/fused_scan.c`` are the ones
``benchmarks/kernel_polynomials.py`` fits, and evaluated in float32 as the kernel does they keep ``exp`` and the
step sizes' softplus within a few ulp of float64."""

from __future__ import annotations

import re

import numpy as np

from benchmarks.kernel_polynomials import fit_exp, fit_log1p, float32_errors
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


def test_float32_accuracy_of_exp_and_softplus():
    p, q = _horner_coefficients("exp_nonpos"), _horner_coefficients("log1p_unit")
    err_exp, err_softplus = float32_errors(p, q, points=400_001)
    assert err_exp < 1.5e-7
    assert err_softplus < 4e-7
    # a polynomial two degrees short fails the bound by far: the bound means something
    assert float32_errors(fit_exp(2), q, points=400_001)[0] > 1.5e-6
