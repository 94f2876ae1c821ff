"""Pixel-level fidelity: the high-frequency power of a sample set against a reference set's.

A feature-space fidelity (k-NN precision in a classifier's or DINO's features) misses what its
encoder averages away: the digits classifier reads 32x32 images at 8x8, so pixel noise of std 0.1
and a 1-pixel blur leave its precision within the evaluation noise (README, "The combined
objective and the front"). Generators' artefacts show in the power spectrum (Durall et al. 2020,
"Watch your up-convolution"): pixel noise adds power at every spatial frequency, blur removes the
high ones. So:

- `band_power`: per image, the mean power of its 2-D DFT over the spatial frequencies above
  ``low`` x the Nyquist frequency (default 0.5: the top half of the radial range);
- `spectral_match`: the mean band power P of the samples against the reference's P_ref, folded
  two-sided, ``exp(-max(0, |log(P / P_ref)| - tolerance))`` (= min(P / P_ref, P_ref / P) with no
  tolerance): exactly 1 for equal powers, lower with noise (more power) and with blur (less);
- `match_tolerance`: the sampling noise of ``log P`` between two independent sets of N images
  like the reference's own N, for a reference made of the very samples a method is compared with
  (the teacher's, for both evaluators): without it the teacher would sit at the peak of the fold
  and an independent set of its own samples would score below it by that noise alone;
- `match_per_prompt`: the mean of the per-prompt matches against such a reference.

The band powers are means over images before the ratio (the spectrum of the *set*, as Durall et
al.): a per-image ratio would reward images all of the same sharpness over the varied sharpness of
real sets.
"""

from __future__ import annotations

import math

import torch


def band_power(images: torch.Tensor, *, low: float = 0.5) -> torch.Tensor:
    """Per image, the mean power of the spatial frequencies above ``low`` x Nyquist.

    Each image's mean is removed first and the power is averaged over channels; normalised by
    H x W (Parseval), so white noise of standard deviation s has power s**2 at every frequency.

    Args:
        images: (B, C, H, W) float in [0, 1] (any C, H, W >= 2).
        low: the band's lower edge as a fraction of the Nyquist frequency, in [0, 1): frequencies
            whose radius sqrt(fx**2 + fy**2) (in Nyquist units) exceeds it are in the band.

    Returns:
        (B,) float64 band power, in squared [0, 1] pixel units per frequency.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or min(images.shape[-2:]) < 2:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"band_power takes images (B, C, H, W) with H, W >= 2, got {shape}")
    if not 0.0 <= low < 1.0:
        raise ValueError(f"low is the band's lower edge as a fraction of Nyquist, in [0, 1), got {low!r}")
    h, w = images.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] * 2.0  # in Nyquist units: +-1 at Nyquist
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :] * 2.0
    in_band = (fy ** 2 + fx ** 2).sqrt() > low  # (H, W)
    powers = []
    for image in images.detach():  # one at a time: a 1024 px RGB spectrum in float64 is 50 MB
        x = image.to("cpu", torch.float64)
        spectrum = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True))
        power = (spectrum.abs() ** 2).mean(dim=0) / (h * w)  # (H, W)
        powers.append(power[in_band].mean())
    return torch.stack(powers)


def spectral_match(reference: torch.Tensor, samples: torch.Tensor, *, tolerance: float = 0.0) -> float:
    """How well the samples' mean band power matches the reference's, folded two-sided.

    Args:
        reference: (N_ref,) band powers (`band_power`) of the reference images, positive mean.
        samples: (N,) band powers of the samples.
        tolerance: a band of |log(P / P_ref)| that costs nothing (`match_tolerance`), >= 0.

    Returns:
        ``exp(-max(0, |log(P / P_ref)| - tolerance))`` in (0, 1], P and P_ref the means; exactly
        1 for sets of equal mean power; 0 for samples without power in the band (flat images).
    """
    reference, samples = _powers(reference, "reference"), _powers(samples, "samples")
    if not tolerance >= 0.0:
        raise ValueError(f"tolerance must be >= 0 (a band of |log power ratio|), got {tolerance!r}")
    p_ref, p = float(reference.mean()), float(samples.mean())
    if p_ref <= 0.0:
        raise ValueError("the reference has no power in the band (flat images): it cannot judge a spectrum")
    if p <= 0.0:
        return 0.0
    return math.exp(-max(0.0, abs(math.log(p / p_ref)) - tolerance))


def match_per_prompt(reference: torch.Tensor, images: torch.Tensor) -> float:
    """Mean over prompts of `spectral_match` of the images' (P, N, C, H, W) band power against
    a reference set's (P, N_ref) band powers of the same prompts, with the reference's own sampling
    noise free (`match_tolerance`, 2 standard errors): a reference made of the very samples a method
    is compared with (the teacher's) scores exactly 1 against itself, and an independent set of
    them scores 1 unless it differs by more than that noise."""
    if reference.ndim != 2 or reference.shape[0] != images.shape[0]:
        raise ValueError(f"the reference holds band powers of shape {tuple(reference.shape)}; "
                         f"expected ({images.shape[0]}, N_ref): one row per prompt of the images")
    return sum(spectral_match(reference[i], band_power(images[i]), tolerance=match_tolerance(reference[i]))
               for i in range(images.shape[0])) / images.shape[0]


def match_tolerance(reference: torch.Tensor, *, z: float = 2.0) -> float:
    """``z`` standard errors of log P between two independent sets of N images like the
    reference's N: z * sqrt(2) * std / (sqrt(N) * mean) of the reference's (N,) band powers
    (the delta method). A reference from the same distribution as the samples then scores 1
    about as often as z standard errors cover (z = 2: ~95%)."""
    reference = _powers(reference, "reference")
    n = reference.numel()
    if n < 2:
        raise ValueError(f"match_tolerance needs at least 2 reference images, got {n}")
    mean = float(reference.mean())
    if mean <= 0.0:
        return 0.0
    return z * math.sqrt(2.0) * float(reference.std()) / (math.sqrt(n) * mean)


def _powers(values, name: str) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.numel() == 0 or not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(f"{name}: band powers must be a non-empty set of finite values >= 0, "
                         f"got {values.tolist()[:8]}")
    return values
