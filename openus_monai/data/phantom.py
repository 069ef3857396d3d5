"""Ultrasound-like B-mode phantoms: sector geometry, tissue layers, lesions, speckle.

Everything is vectorised numpy (FFT filtering, no per-pixel Python loops), so a 256 x 256 phantom
takes a few milliseconds. The generator is a toy physical model, not a simulator: scatterers
weighted by an echogenicity map are blurred by a point-spread function (coherent sum), the envelope
is attenuated with depth, partly compensated by time-gain compensation and log-compressed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LESION_CLASSES", "render_phantom", "simulate_envelope", "sector_geometry"]

#: class names of the synthetic data set; "normal" has no lesion.
LESION_CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")


def _fast_len(n: int) -> int:
    """Smallest length >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _gaussian_transfer(shape: tuple[int, int], sigma_y: float, sigma_x: float, real: bool = False) -> np.ndarray:
    """Fourier transfer function of a Gaussian kernel (std in pixels along rows / columns).

    Returns:
        array [H, W], or [H, W // 2 + 1] for ``real`` (the layout of ``np.fft.rfft2``).
    """
    fy = np.fft.fftfreq(shape[0])
    fx = np.fft.rfftfreq(shape[1]) if real else np.fft.fftfreq(shape[1])
    # separable: the outer product of two 1D Gaussians
    return np.outer(np.exp(-2.0 * np.pi**2 * (sigma_y * fy) ** 2), np.exp(-2.0 * np.pi**2 * (sigma_x * fx) ** 2))


def _gaussian_filter(field: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Gaussian filtering of a (complex or real) 2D field in the Fourier domain.

    Borders are circular, so callers pad by about 3 sigma where wrap-around would show.

    Args:
        field: array of shape [H, W].
        sigma_y: standard deviation along rows, in pixels.
        sigma_x: standard deviation along columns, in pixels.

    Returns:
        filtered array of shape [H, W] (real for a real input).
    """
    h, w = field.shape
    shape = (_fast_len(h), _fast_len(w))
    if np.iscomplexobj(field):
        out = np.fft.ifft2(np.fft.fft2(field, s=shape) * _gaussian_transfer(shape, sigma_y, sigma_x))
    else:
        spectrum = np.fft.rfft2(field, s=shape) * _gaussian_transfer(shape, sigma_y, sigma_x, real=True)
        out = np.fft.irfft2(spectrum, s=shape)
    return out[:h, :w]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without float32 overflow warnings."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std, spatially smooth Gaussian random field of shape [H, W]."""
    pad = int(3 * sigma)
    noise = rng.standard_normal((_fast_len(shape[0] + 2 * pad), _fast_len(shape[1] + 2 * pad)))
    field = _gaussian_filter(noise, sigma, sigma)[pad : pad + shape[0], pad : pad + shape[1]]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def sector_geometry(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, np.ndarray | float]:
    """Random curvilinear (fan) field of view and the polar coordinates of every pixel.

    The apex (centre of curvature of the probe) lies above the image; the fan spans the radii
    ``[r_probe, r_max]`` and the angles ``[-half_angle, half_angle]`` and fits inside the image.

    Args:
        rng: random generator.
        shape: image size (H, W).

    Returns:
        dict with ``fan`` (bool, [H, W]), ``r`` and ``theta`` (radius in pixels and angle in radians
        from the apex, [H, W]), ``depth`` (0 at the probe, 1 at the bottom of the fan, [H, W]),
        ``lateral`` (arc length from the centre line in pixels, [H, W]), and the scalars
        ``apex_x``, ``apex_y``, ``r_probe``, ``r_max``, ``half_angle``.
    """
    h, w = shape
    r_probe = rng.uniform(0.12, 0.3) * h
    apex_y = -r_probe + rng.uniform(0.01, 0.04) * h
    apex_x = (w - 1) / 2.0
    r_max = (h - 1) - apex_y - rng.uniform(0.0, 0.03) * h
    # the widest point of the fan (its bottom corners) must stay inside the image
    half_angle = min(rng.uniform(0.5, 0.65), float(np.arcsin(min(0.97 * (w / 2.0) / r_max, 1.0))))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(yy - apex_y, xx - apex_x)
    theta = np.arctan2(xx - apex_x, yy - apex_y)
    fan = (r >= r_probe) & (r <= r_max) & (np.abs(theta) <= half_angle)
    depth = np.clip((r - r_probe) / (r_max - r_probe), 0.0, 1.0)
    f32 = np.float32  # the maps are float32: transcendental functions are several times faster
    return {
        "fan": fan,
        "r": r.astype(f32),
        "theta": theta.astype(f32),
        "depth": depth.astype(f32),
        "lateral": (r * theta).astype(f32),
        "apex_x": apex_x,
        "apex_y": apex_y,
        "r_probe": r_probe,
        "r_max": r_max,
        "half_angle": half_angle,
    }


def _tissue_echogenicity(rng: np.random.Generator, geom: dict, scale: float) -> np.ndarray:
    """Layered background: wavy bands of different echogenicity, bright interfaces, skin line.

    Returns:
        echogenicity (backscattered intensity, arbitrary units) of shape [H, W].
    """
    depth, lateral, r = geom["depth"], geom["lateral"], geom["r"]
    span = geom["r_max"] - geom["r_probe"]
    n_layers = int(rng.integers(3, 6))
    bounds = sorted(float(b) for b in rng.uniform(0.1, 0.9, n_layers))
    # alternate hypoechoic (fat-like) and hyperechoic (fibroglandular / muscle-like) layers
    dark_first = rng.random() < 0.6
    levels = [rng.uniform(0.08, 0.25) if (k % 2 == 0) == dark_first else rng.uniform(0.5, 1.2) for k in range(n_layers + 1)]
    echo = np.full(depth.shape, levels[0], dtype=np.float32)
    for k, b in enumerate(bounds):
        wave = np.zeros_like(lateral)
        for _ in range(2):  # two harmonics per boundary: gently wavy, not straight
            wavelength = rng.uniform(0.4, 1.5) * lateral.shape[1]
            wave += rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * lateral / wavelength + rng.uniform(0, 2 * np.pi))
        tilt = rng.uniform(-0.05, 0.05) * lateral / lateral.shape[1]
        boundary = b + wave + tilt
        # soft step from the level above to the level below
        step = _sigmoid((depth - boundary) * (span / (2.0 * scale)))
        echo = echo + (levels[k + 1] - levels[k]) * step
        if rng.random() < 0.7:  # specular interface (fascia): thin bright line
            width = rng.uniform(0.8, 1.8) * scale / span
            echo = echo + rng.uniform(1.0, 4.0) * np.exp(-(((depth - boundary) / width) ** 2))
    # a few short bright streaks roughly parallel to the skin (ligaments, muscle fibres)
    for _ in range(int(rng.integers(2, 7))):
        d0, l0 = rng.uniform(0.1, 0.95), rng.uniform(-0.4, 0.4) * lateral.shape[1]
        length, slope = rng.uniform(0.1, 0.3) * lateral.shape[1], rng.uniform(-0.3, 0.3)
        across = (depth - d0) * span - slope * (lateral - l0)
        echo = echo + rng.uniform(0.5, 2.0) * np.exp(-((across / (1.0 * scale)) ** 2) - ((lateral - l0) / length) ** 2)
    # bright skin line right under the probe
    skin = (r - geom["r_probe"]) / scale
    echo = echo + 2.5 * np.exp(-(((skin - 2.0) / 1.5) ** 2))
    # mild heterogeneity of the parenchyma
    echo = echo * np.exp(0.25 * _smooth_noise(rng, depth.shape, 6.0 * scale))
    return np.maximum(echo, 0.02)  # crossing wavy boundaries can overshoot below zero


def _lesion(rng: np.random.Generator, geom: dict, label: str, scale: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Lesion shape: smooth ellipse (benign) or spiculated, harmonic-modulated border (malignant).

    Returns:
        ``inside`` soft membership in [0, 1] and ``mask`` (bool, ``inside >= 0.5`` within the fan),
        both [H, W], and the lesion parameters.
    """
    h, w = geom["fan"].shape
    # centre in polar coordinates, well inside the fan
    d_c = rng.uniform(0.25, 0.55)
    t_c = rng.uniform(-0.45, 0.45) * geom["half_angle"]
    r_c = geom["r_probe"] + d_c * (geom["r_max"] - geom["r_probe"])
    cy = float(geom["apex_y"] + r_c * np.cos(t_c))
    cx = float(geom["apex_x"] + r_c * np.sin(t_c))
    size = min(h, w)
    if label == "benign":
        a = rng.uniform(0.07, 0.14) * size  # semi-axis along the skin (wider than tall)
        b = a * rng.uniform(0.5, 0.8)
    else:
        a = rng.uniform(0.06, 0.11) * size
        b = a * rng.uniform(0.8, 1.25)  # often taller than wide
    rot = rng.uniform(-0.35, 0.35)
    cos, sin = float(np.cos(rot)), float(np.sin(rot))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    rho = np.hypot(u / a, v / b)
    phi = np.arctan2(v / b, u / a)
    if label == "benign":
        radius = 1.0 + rng.uniform(0.0, 0.04) * np.cos(2 * phi + rng.uniform(0, 2 * np.pi))
        softness = 0.03
    else:
        radius = np.ones_like(phi)
        for k in range(2, 7):  # irregular, lobulated outline
            radius += rng.uniform(0.02, 0.1) / (k - 1) ** 0.5 * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        for _ in range(2):  # spicules: two trains of narrow spikes radiating out of the border
            m = int(rng.integers(7, 16))
            radius += rng.uniform(0.1, 0.3) * np.abs(np.cos(0.5 * m * phi + rng.uniform(0, np.pi))) ** 8
        softness = 0.05
    inside = _sigmoid((radius - rho) / softness)
    mask = (rho <= radius) & geom["fan"]
    # echogenic halo: an ill-defined bright rim just outside the border (frequent around carcinomas)
    halo = np.exp(-(((rho - radius) / 0.2) ** 2)) * (rho > radius) if label == "malignant" else np.zeros_like(rho)
    return inside, mask, {"cy": cy, "cx": cx, "a": a, "b": b, "halo": halo}


def _posterior_region(geom: dict, mask: np.ndarray, scale: float) -> np.ndarray:
    """Soft indicator [H, W] of the region below the lesion along the beams (rays from the apex)."""
    theta, r = geom["theta"], geom["r"]
    n_bins = 4 * mask.shape[1]
    half = geom["half_angle"]
    bins = np.clip(((theta + half) / (2 * half) * n_bins).astype(np.int64), 0, n_bins - 1)
    far = np.full(n_bins, np.inf)  # far edge of the lesion on each beam
    np.minimum.at(far, bins[mask], -r[mask])  # min of -r == -(max of r)
    far = np.where(np.isfinite(far), -far, np.inf)
    below = (r > far[bins]) & geom["fan"]
    return np.clip(_gaussian_filter(below.astype(np.float32), 1.5 * scale, 1.5 * scale), 0.0, 1.0)


def simulate_envelope(
    rng: np.random.Generator, echogenicity: np.ndarray, depth: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """Speckle: envelope of scatterers weighted by ``sqrt(echogenicity)`` and blurred by a PSF.

    Circular complex Gaussian scatterers convolved with a Gaussian point-spread function give a
    complex Gaussian field, so the envelope (its magnitude) is Rayleigh-distributed in homogeneous
    tissue (std / mean = sqrt(4 / pi - 1) ~ 0.52) and spatially correlated over the PSF size. The
    lateral PSF width grows with depth (beam spreading away from the focus).

    Args:
        rng: random generator.
        echogenicity: backscattered intensity, shape [H, W].
        depth: normalised depth in [0, 1], shape [H, W].
        scale: pixel-size factor (1.0 for a 256-pixel image).

    Returns:
        envelope amplitude of shape [H, W] (float64, >= 0).
    """
    h, w = echogenicity.shape
    pad = int(np.ceil(12 * scale))  # reflect padding keeps the circular FFT away from the image
    widths = ((pad, _fast_len(h + 2 * pad) - h - pad), (pad, _fast_len(w + 2 * pad) - w - pad))
    amp = np.pad(np.sqrt(echogenicity), widths, mode="reflect")
    scat = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * (amp / np.sqrt(2.0))
    spectrum = np.fft.fft2(scat)
    fields = []
    for sigma_y, sigma_x in ((1.0 * scale, 1.8 * scale), (1.1 * scale, 3.5 * scale)):
        transfer = _gaussian_transfer(amp.shape, sigma_y, sigma_x)
        # unit-energy PSF (Parseval), so the mean intensity does not depend on the PSF width
        transfer = transfer / np.sqrt(np.mean(transfer**2))
        fields.append(np.fft.ifft2(spectrum * transfer)[pad : pad + h, pad : pad + w])
    near, far = fields
    # lateral resolution degrades with depth: cross-fade (in amplitude) from the near to the far PSF
    field = np.cos(0.5 * np.pi * depth) * near + np.sin(0.5 * np.pi * depth) * far
    return np.abs(field)


def render_phantom(
    rng: np.random.Generator, shape: tuple[int, int], label: str, dynamic_range_db: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one B-mode phantom of a lesion class.

    Args:
        rng: random generator (all randomness of the image comes from it).
        shape: image size (H, W).
        label: one of :data:`LESION_CLASSES`: ``"benign"`` (hypoechoic smooth ellipse, often with
            posterior acoustic enhancement), ``"malignant"`` (hypoechoic, irregular spiculated border,
            posterior acoustic shadowing) or ``"normal"`` (no lesion).
        dynamic_range_db: log-compression dynamic range; drawn in [40, 55] dB when None.

    Returns:
        ``image`` (uint8, [H, W], 0 outside the fan and >= 1 inside) and ``mask`` (uint8 in {0, 255}, [H, W],
        the lesion inside the fan; all zero for ``"normal"``).
    """
    if label not in LESION_CLASSES:
        raise ValueError(f"label must be one of {LESION_CLASSES}, got {label!r}.")
    h, w = shape
    scale = float(np.sqrt(h * w) / 256.0)
    geom = sector_geometry(rng, (h, w))
    fan, depth = geom["fan"], geom["depth"]
    echo = _tissue_echogenicity(rng, geom, scale)
    mask = np.zeros((h, w), dtype=bool)
    if label != "normal":
        inside, mask, params = _lesion(rng, geom, label, scale)
        posterior = _posterior_region(geom, mask, scale)
        if label == "benign":
            contrast = 10.0 ** rng.uniform(-2.0, -1.3)  # intensity ratio lesion / surrounding: -13 to -20 dB
            texture = np.exp(0.2 * _smooth_noise(rng, (h, w), 3.0 * scale))
            post_gain = rng.uniform(2.0, 3.5) if rng.random() < 0.75 else 1.0  # posterior enhancement
        else:
            contrast = 10.0 ** rng.uniform(-2.0, -1.4)
            texture = np.exp(0.35 * _smooth_noise(rng, (h, w), 2.0 * scale))  # heterogeneous interior
            echo = echo * (1.0 + rng.uniform(0.0, 1.5) * params["halo"])
            post_gain = rng.uniform(0.12, 0.3) if rng.random() < 0.9 else 0.6  # posterior shadowing
        echo = echo * (1.0 + posterior * (post_gain - 1.0))
        # the lesion replaces the tissue (no layer or fascia line runs through it): its echo is a
        # fraction of the local tissue level, a heavily smoothed echogenicity map
        local = _gaussian_filter(echo, 8.0 * scale, 8.0 * scale)
        echo = echo * (1.0 - inside) + inside * contrast * texture * local
    env = simulate_envelope(rng, echo, depth, scale)
    # depth attenuation (amplitude), imperfectly compensated by a TGC curve with a few slider bumps
    atten = rng.uniform(1.6, 2.6)
    sliders = rng.normal(0.0, 0.12, 8)
    tgc = np.exp(atten * rng.uniform(0.55, 0.85) * depth + np.interp(depth, np.linspace(0, 1, 8), sliders))
    focus = 1.0 + 0.3 * np.exp(-(((depth - rng.uniform(0.3, 0.6)) / 0.15) ** 2))
    env = env * np.exp(-atten * depth) * tgc * focus
    # log compression to 8 bits: the gain puts the median echo of the fan at a mid-grey level
    dr = rng.uniform(40.0, 55.0) if dynamic_range_db is None else float(dynamic_range_db)
    db = 20.0 * np.log10(np.maximum(env / np.median(env[fan]), 1e-6))
    db = _gaussian_filter(db, 0.6 * scale, 0.6 * scale)  # the scanner's mild speckle smoothing
    image = np.clip(rng.uniform(85.0, 115.0) + db * (255.0 / dr), 0.0, 255.0)
    # inside the fan values are >= 1, so ``image > 0`` is exactly the field of view
    image = np.where(fan, np.clip(np.round(image), 1, 255), 0).astype(np.uint8)
    return image, (mask.astype(np.uint8) * 255)
