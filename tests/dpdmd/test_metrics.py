"""Tests of dpdmd.evaluation: the metric functions, the Evaluator base, and the digits evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from dpdmd.data.digits import ALL_PROMPTS
from dpdmd.evaluation import (
    DigitsClassifier,
    DigitsClassifierConfig,
    DigitsEvaluator,
    Evaluator,
    frechet_distance,
    knn_precision_recall_coverage,
    pairwise_diversity,
)
from dpdmd.evaluation.digits_classifier import real_digits


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    """Keep every cached artefact of these tests out of ~/.cache."""
    monkeypatch.setenv("DPDMD_CACHE", str(tmp_path / "cache"))


# --- diversity ---
def test_diversity_identical_is_zero_and_orthogonal_is_one():
    same = torch.randn(1, 1, 16).expand(3, 5, 16)  # every sample of every prompt identical
    assert pairwise_diversity(same) == pytest.approx(0.0, abs=1e-9)
    orthogonal = torch.eye(6)[None].repeat(2, 1, 1) * 3.0  # scale must not matter
    assert pairwise_diversity(orthogonal) == pytest.approx(1.0, abs=1e-12)


def test_diversity_hand_computed_three_samples_averaged_over_prompts():
    # cosines: (e1, e2) = 0, (e1, e1+e2) = (e2, e1+e2) = 1/sqrt2 -> mean sqrt2/3
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    second = torch.tensor([[2.0, 0.0], [1.0, 0.0], [5.0, 0.0]])  # all one direction: diversity 0
    features = torch.stack([first, second])
    expected = ((1.0 - math.sqrt(2.0) / 3.0) + 0.0) / 2.0
    assert pairwise_diversity(features) == pytest.approx(expected, abs=1e-12)


def test_diversity_rejects_single_sample_and_wrong_rank():
    with pytest.raises(ValueError, match="N=1"):
        pairwise_diversity(torch.randn(4, 1, 8))
    with pytest.raises(ValueError, match=r"features\[None\]"):
        pairwise_diversity(torch.randn(4, 8))


# --- Frechet distance ---
def test_frechet_distance_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(200, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(a).float()) == pytest.approx(0.0, abs=1e-4)


def test_frechet_distance_matches_1d_closed_form_and_grows_with_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(500, 1))
    values = []
    for shift in (0.0, 1.0, 2.0):
        b = rng.normal(shift, 2.0, size=(400, 1))
        va, vb = a.var(ddof=1), b.var(ddof=1)
        closed = (a.mean() - b.mean()) ** 2 + va + vb - 2.0 * math.sqrt(va * vb)
        assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-6)
        values.append(frechet_distance(a, b))
    assert values[0] < values[1] < values[2]
    # population value for shift 2: 4 + 1 + 4 - 2*2 = 5
    assert values[2] == pytest.approx(5.0, rel=0.25)


def test_frechet_distance_pure_shift_and_singular_covariance():
    a = np.random.default_rng(2).normal(size=(300, 8))
    shift = np.arange(8) / 4.0
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    few = a[:5]  # 5 samples in 8-d: singular covariance, must still be finite
    value = frechet_distance(a, few)
    assert math.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="D=8 and D=3"):
        frechet_distance(a, a[:, :3])


# --- k-NN precision / recall / coverage ---
def test_prc_is_one_for_real_vs_real_and_drops_when_shifted():
    real = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    assert knn_precision_recall_coverage(real, real, k=5) == {"precision": 1.0, "recall": 1.0, "coverage": 1.0}
    near = knn_precision_recall_coverage(real, real[:100] + 1.0, k=5)
    far = knn_precision_recall_coverage(real, real[:100] + 10.0, k=5)
    for key in ("precision", "recall", "coverage"):
        assert near[key] < 0.9
        assert far[key] == 0.0


def test_prc_rejects_bad_k_and_too_few_samples():
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        knn_precision_recall_coverage(torch.randn(10, 2), torch.randn(10, 2), k=0)
    with pytest.raises(ValueError, match="at least 4 rows"):
        knn_precision_recall_coverage(torch.randn(10, 2), torch.randn(3, 2), k=3)


# --- the Evaluator base ---
class _PixelEvaluator(Evaluator):
    """Flattened pixels as features, mean brightness as quality: exercises the shared helpers."""

    quality_key = "brightness"

    def features(self, images):
        return images.flatten(1).float()

    def score(self, images, prompts):
        feats = self.grid_features(images, prompts)
        return self.with_quality({"diversity": self.diversity(feats), "brightness": float(images.mean())})


def test_base_evaluator_shares_diversity_and_quality():
    images = torch.rand(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    scores = _PixelEvaluator().score(images, ["a", "b"])
    assert scores["quality"] == scores["brightness"]
    assert scores["diversity"] == pytest.approx(pairwise_diversity(images.flatten(2)))
    with pytest.raises(ValueError, match="got 2 prompts' worth of images"):
        _PixelEvaluator().score(images, ["a"])
    with pytest.raises(ValueError, match=r"\(images \+ 1\) / 2"):
        _PixelEvaluator().score(images * 2 - 1, ["a", "b"])


# --- the digits classifier and evaluator ---
@pytest.fixture(scope="module")
def split():
    """A stratified 80/20 split of the real digits, as in DigitsClassifier's docstring."""
    images, labels = real_digits()
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels.numpy(), random_state=0)
    return images, labels, torch.from_numpy(train), torch.from_numpy(test)


@pytest.fixture(scope="module")
def classifier(split):
    """The default classifier trained on the training part only (a few seconds)."""
    images, labels, train, _ = split
    return DigitsClassifier.fit(images[train], labels[train])


def _held_out_grid(split, per_class: int) -> torch.Tensor:
    """(10, per_class, 1, 32, 32) held-out real digits, class d in row d."""
    images, labels, _, test = split
    rows = [test[labels[test] == d][:per_class] for d in range(10)]
    return torch.stack([images[r] for r in rows])


def test_classifier_held_out_accuracy_clean_and_noisy(split, classifier):
    images, labels, _, test = split
    assert classifier.accuracy(images[test], labels[test]) > 0.9
    noisy = (images[test] + 0.2 * torch.randn(images[test].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert classifier.accuracy(noisy, labels[test]) > 0.9
    feats = classifier.features(images[test[:5]])
    assert feats.shape == (5, 64) and feats.dtype == torch.float32
    assert torch.allclose(classifier.probs(images[test[:5]]).sum(-1), torch.ones(5))


def _with_reference(evaluator, reference: torch.Tensor):
    """``evaluator`` reading spectra against ``reference`` (10, N, 1, 32, 32), as a teacher's."""
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(reference, ALL_PROMPTS))
    return evaluator


def test_evaluator_on_real_digits_and_on_noise(split, classifier):
    grid = _held_out_grid(split, 16)
    evaluator = _with_reference(DigitsEvaluator(classifier=classifier), grid[:, 8:])  # other real digits
    real = evaluator.score(grid[:, :8], ALL_PROMPTS)
    assert set(real) >= {"diversity", "quality", "class_prob", "accuracy", "fid", "precision", "recall", "coverage",
                         "spectral"}
    assert real["class_prob"] > 0.9
    # the default quality is fidelity = class_prob x precision x spectral (the right digit, on the
    # real manifold, with the reference's high-frequency power)
    assert real["quality"] == real["fidelity"] == pytest.approx(real["class_prob"] * real["precision"] * real["spectral"])
    assert real["spectral"] > 0.8
    assert real["accuracy"] > 0.9
    assert 0.0 < real["diversity"] < 1.0 and real["precision"] > 0.5
    noise = torch.rand(10, 8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    fake = evaluator.score(noise, ALL_PROMPTS)
    assert fake["class_prob"] < 0.3 and fake["accuracy"] < 0.3
    assert fake["fid"] > real["fid"] and fake["precision"] < real["precision"] and fake["spectral"] < 0.2
    assert fake["quality"] < real["quality"]


def test_spectral_reads_samples_against_the_teacher_reference(split, classifier):
    """The spectral reference is the teacher's samples of each prompt (not the real digits): a
    set scores 1 against itself, and blurring or adding noise to it lowers the match."""
    from dpdmd.evaluation.corruptions import blur, gaussian_noise

    grid = _held_out_grid(split, 8)
    evaluator = DigitsEvaluator(classifier=classifier)
    with pytest.raises(ValueError, match="needs the teacher's reference.*set_teacher_reference"):
        evaluator.score(grid, ALL_PROMPTS)
    _with_reference(evaluator, blur(grid, 0.5))  # a blurred "teacher": sharper samples now deviate
    assert evaluator.score(blur(grid, 0.5), ALL_PROMPTS)["spectral"] == 1.0
    assert evaluator.score(grid, ALL_PROMPTS)["spectral"] < 0.9
    _with_reference(evaluator, grid)
    assert evaluator.score(grid, ALL_PROMPTS)["spectral"] == 1.0
    assert evaluator.score(blur(grid, 0.5), ALL_PROMPTS)["spectral"] < 0.9
    assert evaluator.score(gaussian_noise(grid, 0.2), ALL_PROMPTS)["spectral"] < 0.9
    with pytest.raises(ValueError, match="no samples of prompts"):
        evaluator.score(grid[:1], ["digit 0"])  # the reference holds "a handwritten digit zero"
    with pytest.raises(ValueError, match="prompts and band_power"):
        evaluator.set_teacher_reference({"band_power": torch.ones(10, 8)})


def test_evaluator_quality_metric_and_reference_scores(split, classifier):
    evaluator = _with_reference(DigitsEvaluator(quality_metric="coverage", classifier=classifier),
                                _held_out_grid(split, 4))
    scores = evaluator.score(_held_out_grid(split, 4), ALL_PROMPTS)
    assert scores["quality"] == scores["coverage"]
    reference = evaluator.reference_scores(8, seed=3)
    assert reference == evaluator.reference_scores(8, seed=3)
    assert reference["class_prob"] > 0.9 and 0.0 < reference["precision"] <= 1.0


def test_evaluator_errors_name_the_bad_value(split, classifier):
    with pytest.raises(ValueError, match="'pickscore'.*fidelity, class_prob, accuracy, precision, coverage"):
        DigitsEvaluator(quality_metric="pickscore")
    evaluator = _with_reference(DigitsEvaluator(classifier=classifier), _held_out_grid(split, 4))
    images = torch.rand(1, 4, 1, 32, 32)
    with pytest.raises(ValueError, match="'a handwritten digit eleven'"):
        evaluator.score(images, ["a handwritten digit eleven"])
    with pytest.raises(ValueError, match="unconditional prompt"):
        evaluator.score(images, [""])
    with pytest.raises(ValueError, match="N=3"):
        evaluator.score(images[:, :3], ["seven"])


def test_load_trains_once_then_reads_the_cache(tmp_path):
    config = DigitsClassifierConfig(epochs=1)
    first = DigitsClassifier.load(config=config)
    files = list((tmp_path / "cache").glob("digits-classifier-*.pt"))
    assert len(files) == 1
    second = DigitsClassifier.load(config=config)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
