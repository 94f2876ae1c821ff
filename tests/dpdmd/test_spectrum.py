"""The spectral match (dpdmd/evaluation/spectrum.py): band power by hand, noise raises it, blur lowers
it, identical sets match exactly, the fold is two-sided and the tolerance is the sampling noise."""

from __future__ import annotations

import math

import pytest
import torch

from dpdmd.evaluation.corruptions import blur, gaussian_noise
from dpdmd.evaluation.digits_classifier import real_digits
from dpdmd.evaluation.spectrum import band_power, match_tolerance, spectral_match


def _cosine(cycles: int, size: int = 32) -> torch.Tensor:
    """(1, 1, size, size) cos(2 pi cycles x / size): all its power at horizontal frequency +-cycles."""
    x = torch.arange(size, dtype=torch.float64)
    return torch.cos(2 * math.pi * cycles * x / size).expand(size, size)[None, None].clone()


def test_band_power_by_hand():
    size = 32
    fy = torch.fft.fftfreq(size, dtype=torch.float64)[:, None] * 2
    fx = torch.fft.fftfreq(size, dtype=torch.float64)[None, :] * 2
    in_band = int(((fy ** 2 + fx ** 2).sqrt() > 0.5).sum())
    # a cosine of amplitude 1 has variance 1/2: power 1/2 per pixel, H x W / 2 in all (Parseval,
    # with the 1 / (H W) normalisation), all of it at +-cycles, in the band (above half Nyquist,
    # 8 cycles at 32 px) only when cycles > 8; the band power is a mean over the band's frequencies
    assert band_power(_cosine(12)).item() == pytest.approx(0.5 * size * size / in_band, rel=1e-9)
    assert band_power(_cosine(4)).item() == pytest.approx(0.0, abs=1e-12)
    assert band_power(_cosine(4), low=0.2).item() > 0.0
    assert band_power(torch.full((2, 3, 8, 8), 0.7)).tolist() == [0.0, 0.0]  # flat: no power
    # white noise of std s has power s**2 at every frequency (Parseval), in every channel
    noise = 0.1 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert band_power(noise).mean().item() == pytest.approx(0.01, rel=0.03)


@pytest.fixture(scope="module")
def digits():
    """80 real digits (80, 1, 32, 32) in [0, 1] and their band powers."""
    images = real_digits()[0][:80]
    return images, band_power(images)


def test_noise_raises_the_band_power_and_blur_lowers_it(digits):
    images, clean = digits
    grid = images[None]  # (1, 80, 1, 32, 32), as the corruptions take
    noisy = band_power(gaussian_noise(grid, 0.1)[0])
    blurred = band_power(blur(grid, 1.0)[0])
    # measured: x 1.38 with noise 0.1, x 0.05 with a 1-pixel blur (real digits are 8x8 blocks at 32x32)
    assert noisy.mean() > 1.2 * clean.mean() and blurred.mean() < 0.2 * clean.mean()
    # so both lower the match, the stronger the lower
    assert 1.0 > spectral_match(clean, noisy) > spectral_match(clean, band_power(gaussian_noise(grid, 0.2)[0]))
    assert 1.0 > spectral_match(clean, band_power(blur(grid, 0.5)[0])) > spectral_match(clean, blurred)


def test_identical_sets_match_exactly_and_the_fold_is_two_sided(digits):
    _, clean = digits
    assert spectral_match(clean, clean) == 1.0
    assert spectral_match(clean, clean.flip(0)) == 1.0  # a statistic of the set, not of the order
    assert spectral_match(clean, 2 * clean) == pytest.approx(0.5)
    assert spectral_match(clean, clean / 2) == pytest.approx(0.5)
    assert spectral_match(clean, torch.zeros(5)) == 0.0  # samples with no high frequencies at all


def test_tolerance_is_free_and_is_the_sampling_noise_of_log_power():
    ref = torch.tensor([1.0, 3.0])
    assert spectral_match(ref, 2 * ref, tolerance=math.log(2)) == 1.0
    assert spectral_match(ref, 2 * ref, tolerance=0.5 * math.log(2)) == pytest.approx(2 ** -0.5)
    # z sqrt(2) std / (sqrt(N) mean): 2 * sqrt(2) * sqrt(2) / (sqrt(2) * 2) = sqrt(2)
    assert match_tolerance(ref) == pytest.approx(math.sqrt(2))
    assert match_tolerance(ref, z=1.0) == pytest.approx(math.sqrt(2) / 2)
    assert match_tolerance(torch.full((4,), 0.3)) == 0.0  # no spread, no noise


def test_errors_name_the_bad_input():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        band_power(torch.rand(8, 8))
    with pytest.raises(ValueError, match=r"fraction of Nyquist, in \[0, 1\)"):
        band_power(torch.rand(1, 1, 8, 8), low=1.0)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        spectral_match(torch.ones(3), torch.ones(3), tolerance=-0.1)
    with pytest.raises(ValueError, match="reference has no power"):
        spectral_match(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="samples: band powers must be"):
        spectral_match(torch.ones(3), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="at least 2 reference images"):
        match_tolerance(torch.ones(1))
