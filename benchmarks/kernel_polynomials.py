"""The fused scan kernel's polynomials (``openus_monai/networks/ops/csrc/fused_scan.c``): fit and accuracy.

The kernel's arithmetic is mostly two polynomials: ``exp(r) = 1 + r + r^2 p(r)`` on ``[-ln2/2, ln2/2]`` (after
range reduction) and ``log1p(z) = 2 s q(s^2)``, ``s = z / (2 + z)`` in ``[0, 1/3]`` (the softplus of the step
sizes). This script refits both (least squares of the relative error on 2000 Chebyshev nodes) and prints the
coefficients, in the order the kernel's Horner loops use them, and the worst relative error of the fitted
polynomial and of the whole function evaluated in float32 the way the kernel does it::

    python benchmarks/kernel_polynomials.py --degree 4
"""

from __future__ import annotations

import argparse

import numpy as np

NODES = 2000


def chebyshev_nodes(low: float, high: float) -> np.ndarray:
    return low + (high - low) * (np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES) + 1) / 2


def fit_exp(degree: int) -> np.ndarray:
    """Coefficients (lowest first) of ``p`` in ``exp(r) = 1 + r + r^2 p(r)``, relative error weighted."""
    half = np.log(2) / 2
    r = chebyshev_nodes(-half, half)
    return np.polynomial.polynomial.polyfit(r, (np.exp(r) - 1 - r) / r**2, degree, w=r**2 / np.exp(r))


def fit_log1p(degree: int) -> np.ndarray:
    """Coefficients (lowest first) of ``q`` in ``log1p(z) = 2 s q(s^2)``, ``s = z / (2 + z)``."""
    s2 = chebyshev_nodes(0.0, 1.0 / 9.0)
    s = np.sqrt(s2)
    return np.polynomial.polynomial.polyfit(s2, np.arctanh(s) / s, degree)


def horner32(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The kernel's Horner loop in float32 (highest coefficient first)."""
    c = coefficients.astype(np.float32)
    p = np.full_like(x, c[-1])
    for a in c[-2::-1]:
        p = p * x + a
    return p


def exp_nonpos32(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The kernel's ``exp_nonpos`` in float32: Cody-Waite reduction, then ``1 + r + r^2 p(r)`` times ``2^n``."""
    x = np.maximum(x, np.float32(-87.0))
    n = np.rint(x * np.float32(1.44269504088896341))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    return (horner32(p, r) * r * r + r + np.float32(1.0)) * np.ldexp(np.float32(1.0), n.astype(np.int32))


def softplus32(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The kernel's ``step_size`` (softplus) in float32."""
    z = exp_nonpos32(-np.abs(x), p)
    s = z / (np.float32(2.0) + z)
    return np.maximum(x, np.float32(0.0)) + np.float32(2.0) * s * horner32(q, s * s)


def float32_errors(p: np.ndarray, q: np.ndarray, points: int = 2_000_001) -> tuple[float, float]:
    """Worst relative errors, against float64, of the kernel's float32 ``exp`` over ``[-87, 0]`` and softplus over
    ``[-30, 30]`` with the coefficients ``p`` and ``q`` (lowest first), on ``points`` float32 arguments each."""
    xe = np.linspace(-87, 0, points, dtype=np.float32)
    xs = np.linspace(-30, 30, points, dtype=np.float32)
    exact_sp = np.maximum(xs.astype(np.float64), 0) + np.log1p(np.exp(-np.abs(xs.astype(np.float64))))
    err_exp = np.abs(exp_nonpos32(xe, p) / np.exp(xe.astype(np.float64)) - 1).max()
    err_sp = np.abs(softplus32(xs, p, q) / exact_sp - 1).max()
    return float(err_exp), float(err_sp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=4, help="degree of p and of q")
    args = parser.parse_args()
    p, q = fit_exp(args.degree), fit_log1p(args.degree)
    half = np.log(2) / 2
    r = np.linspace(-half, half, 200001)
    s = np.linspace(1e-6, 1 / 3, 200001)
    fit_p = np.abs((1 + r + r**2 * np.polynomial.polynomial.polyval(r, p)) / np.exp(r) - 1).max()
    fit_q = np.abs(2 * s * np.polynomial.polynomial.polyval(s**2, q) / (2 * np.arctanh(s)) - 1).max()
    err_exp, err_sp = float32_errors(p, q)
    print(f"exp: p of degree {args.degree}, highest first: " + ", ".join(f"{c:.10e}" for c in p[::-1]))
    print(f"log1p: q of degree {args.degree}, highest first: " + ", ".join(f"{c:.10e}" for c in q[::-1]))
    print("| function | fit's max relative error (float64) | max relative error in float32 | range |")
    print("|---|---:|---:|---|")
    print(f"| exp | {fit_p:.2e} | {err_exp:.2e} | [-87, 0] |")
    print(f"| softplus (log1p) | {fit_q:.2e} | {err_sp:.2e} | [-30, 30] |")


if __name__ == "__main__":
    main()
