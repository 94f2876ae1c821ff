"""Evaluation for the built-in digits backbones: `DigitsEvaluator`, with `DigitsClassifier` as
its image encoder (`dpdmd.evaluation.digits_classifier`).

The default "quality", fidelity, is the classifier's probability of the prompted digit times the
k-NN precision against the real digits of the class times the match of the samples'
high-frequency power with the teacher's samples of the same prompt (`spectral`, which sees the
pixel noise and blur the 8x8 read-out averages away: `dpdmd.evaluation.spectrum`). The spectral
reference is the teacher's, not the real digits': the student's target is the teacher's
distribution, and the real digits are 8x8 images upsampled to 32x32, with almost no power in the
top band. Against them a blur of the digits-eps teacher's speckled samples *raised* their fidelity
(0.45 -> 0.84), so blurring a teacher scored as improving it.

Classifier features compress the variation within a class (they are trained to separate classes):
real digits of one class have a diversity of about 0.075 here (a collapsed set 0, digits of
all classes mixed about 0.36). Compare diversities with `DigitsEvaluator.reference_scores`, not
with DINOv2 / CLIP numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch

from ..data import digits as digits_data
from .base import Evaluator, check_grid
from .digits_classifier import NUM_CLASSES, DigitsClassifier, one_thread, real_digits
from .feature_stats import frechet_distance, knn_precision_recall_coverage
from .spectrum import band_power, match_per_prompt, spectral_match

QUALITY_METRICS = ("fidelity", "class_prob", "accuracy", "precision", "coverage")


class DigitsEvaluator(Evaluator):
    """Scores digit samples with `DigitsClassifier`, against the real digits of each prompted class.

    `score` returns, averaged over prompts:

    - ``"diversity"``: `pairwise_diversity` of the classifier features;
    - ``"class_prob"``: mean probability of the prompted class;
    - ``"accuracy"``: fraction of samples whose argmax is the prompted class;
    - ``"fid"``: `frechet_distance` between the N samples and the ~180 real digits of the class
      (strongly biased upwards at small N: compare only at equal N);
    - ``"precision"``, ``"recall"``, ``"coverage"``: `knn_precision_recall_coverage` of the N
      samples against the real digits of the class, with neighbour ``k`` (default 3, since N is
      small, e.g. 8; N must exceed k). Recall and coverage of 8 samples against ~180 reals are
      low even for real digits: read them against `reference_scores` at the same N;
    - ``"spectral"``: per prompt, `spectral_match` of the samples' mean `band_power` (the top half
      of the 32x32 spectrum) against the teacher's samples of the same prompt (the reference set
      by `set_teacher_reference`, with its own sampling noise free: `match_per_prompt`), averaged
      over prompts: 1 for the teacher's high-frequency power, lower for more (pixel noise) and
      for less (blur). `reference_scores` reads real digits against the other real digits;
    - ``"fidelity"``: ``class_prob * precision * spectral``, "the right digit, on the real digits'
      manifold, with their sharpness". Class probability alone barely moves with pixel noise or
      blur (the classifier average-pools them away); precision falls with strong noise and blur
      but not with noise of std 0.1 or a 1-pixel blur on digits-flow; the spectral match falls with
      both; a lost class lowers class_prob. The default quality: README "The combined objective
      and the front" has the measurements;
    - ``"quality"``: a copy of the metric named by ``quality_metric``.

    `score` needs the teacher's reference first (``uses_teacher_reference``): call
    ``set_teacher_reference(teacher_reference_state(teacher_images, prompts))``;
    `dpdmd.evaluation.teacher_reference` does it from the on-disk cache for the trainer and the search.

    Args:
        quality_metric: one of ``"fidelity"`` (default), ``"class_prob"``, ``"accuracy"``,
            ``"precision"``, ``"coverage"``.
        k: the k-NN neighbour for precision / recall / coverage.
        classifier: a trained `DigitsClassifier`; default `DigitsClassifier.load()` (on first use).
    """

    uses_teacher_reference = True  # the spectral match reads samples against the teacher's

    def __init__(self, *, quality_metric: str = "fidelity", k: int = 3,
                 classifier: DigitsClassifier | None = None):
        if quality_metric not in QUALITY_METRICS:
            raise ValueError(
                f"unknown quality_metric {quality_metric!r} for DigitsEvaluator; "
                f"allowed: {', '.join(QUALITY_METRICS)}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.quality_key = quality_metric
        self.k = k
        self._classifier = classifier
        self._teacher_band_power: dict[str, torch.Tensor] | None = None  # prompt -> (N_ref,)

    @classmethod
    def prompt_problem(cls, prompt: str) -> str | None:
        """A digit prompt only: the samples are compared with the real digits of the prompted class,
        and the unconditional prompt ``""`` (or any other text) names none."""
        try:
            if digits_data.parse_prompt(prompt) is not None:
                return None
        except ValueError as err:
            return f"the digits evaluator cannot score it: {err}"
        return ("the digits evaluator cannot score the unconditional prompt '': it compares samples with the "
                "prompted class; allowed: a digit prompt such as 'seven', '7', 'digit seven' or "
                "'a handwritten digit seven'")

    def teacher_reference_state(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """``{"prompts", "band_power"}``: the prompts in order and the `band_power` (P, N) float64
        of the teacher's images (P, N, 1, H, W), the reference of ``spectral``."""
        p, n = check_grid(images, prompts)
        return {"prompts": list(prompts),
                "band_power": band_power(images.reshape(p * n, *images.shape[2:])).reshape(p, n)}

    def set_teacher_reference(self, state: dict | None) -> None:
        """Read later samples' spectra against ``state`` (from `teacher_reference_state`)."""
        if not isinstance(state, Mapping) or not {"prompts", "band_power"} <= set(state):
            held = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"a digits teacher reference is a dict with prompts and band_power "
                             f"(DigitsEvaluator.teacher_reference_state), got {held}; recompute it (delete "
                             "the cached teacher-metrics entry of an older version)")
        powers = torch.as_tensor(state["band_power"], dtype=torch.float64)
        if powers.ndim != 2 or powers.shape[0] != len(state["prompts"]) or powers.shape[1] < 2:
            raise ValueError(f"a digits teacher reference needs band_power of shape (P prompts, N >= 2 seeds), "
                             f"got {tuple(powers.shape)} for {len(state['prompts'])} prompts")
        self._teacher_band_power = dict(zip(state["prompts"], powers))

    def _teacher_spectra(self, prompts: Sequence[str]) -> torch.Tensor:
        """The teacher's band powers (P, N_ref) for these prompts, or an error saying what to do."""
        if self._teacher_band_power is None:
            raise ValueError("DigitsEvaluator.score needs the teacher's reference (the spectral match reads "
                             "samples against the teacher's): call set_teacher_reference(teacher_reference_state("
                             "teacher_images, prompts)); dpdmd.evaluation.teacher_reference does it from the cache")
        missing = [prompt for prompt in prompts if prompt not in self._teacher_band_power]
        if missing:
            raise ValueError(f"the teacher reference has no samples of prompts {missing}; it holds "
                             f"{sorted(self._teacher_band_power)}: compute it on the prompts you score")
        return torch.stack([self._teacher_band_power[prompt] for prompt in prompts])

    @property
    def classifier(self) -> DigitsClassifier:
        if self._classifier is None:
            self._classifier = DigitsClassifier.load()
        return self._classifier

    @functools.cached_property
    def _real(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (1797, D) and labels (1797,) of all real digits."""
        images, labels = real_digits()
        return self.features(images), labels

    @functools.cached_property
    def _real_band_power(self) -> torch.Tensor:
        """`band_power` (1797,) of all real digits at 32x32 (in the order of ``_real``)."""
        return band_power(real_digits()[0])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier features (B, D) float32 of images (B, 1, H, W) in [0, 1]."""
        return self.classifier.features(images).cpu()

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
        """Metrics of images (P, N, 1, H, W) in [0, 1], N seeds for each of the P digit prompts."""
        check_grid(images, prompts)
        classes = [_prompt_class(prompt) for prompt in prompts]  # a malformed prompt fails first
        self._check_seeds(images.shape[1])
        spectral = match_per_prompt(self._teacher_spectra(prompts), images)
        with one_thread():
            return self._score(images, classes, spectral=spectral, exclude=None)

    def reference_scores(self, num_per_class: int, *, seed: int = 0) -> dict[str, float]:
        """The same metrics for real digits: ``num_per_class`` drawn (seeded) from each class.

        The drawn digits are left out of the real reference they are compared with, so precision
        is not trivially 1. The classifier has seen them in training, so class_prob and accuracy
        are optimistic. ``spectral`` reads them against the other real digits of their class.
        """
        labels = real_digits()[1]
        smallest = int(torch.bincount(labels, minlength=NUM_CLASSES).min())
        if not 2 <= num_per_class <= smallest - (self.k + 1):
            raise ValueError(
                f"num_per_class must be in [2, {smallest - self.k - 1}] (the smallest class has "
                f"{smallest} digits and k={self.k} neighbours must remain), got {num_per_class}"
            )
        gen = torch.Generator().manual_seed(seed)
        picks = []
        for digit in range(NUM_CLASSES):
            members = torch.nonzero(labels == digit).squeeze(1)
            picks.append(members[torch.randperm(len(members), generator=gen)[:num_per_class]])
        picked = torch.stack(picks)  # (10, N)
        images, _ = real_digits()
        exclude = torch.zeros(len(labels), dtype=torch.bool)
        exclude[picked.flatten()] = True
        real_band_power = band_power(images)
        spectral = sum(spectral_match(real_band_power[(labels == digit) & ~exclude], real_band_power[picked[digit]])
                       for digit in range(NUM_CLASSES)) / NUM_CLASSES
        with one_thread():
            return self._score(images[picked], list(range(NUM_CLASSES)), spectral=spectral, exclude=exclude)

    def _check_seeds(self, n: int) -> None:
        if n <= self.k:
            raise ValueError(
                f"DigitsEvaluator(k={self.k}) needs more than k samples per prompt for k-NN recall, "
                f"got N={n}; generate more seeds or pass a smaller k"
            )

    def _score(self, images: torch.Tensor, classes: Sequence[int], *, spectral: float,
               exclude: torch.Tensor | None) -> dict[str, float]:
        """`score` of images (P, N, 1, H, W) of the P ``classes``, given their ``spectral`` match,
        with real digits marked in ``exclude`` (1797,) left out of the reference."""
        n = images.shape[1]
        self._check_seeds(n)
        feats = self.features(images.flatten(0, 1)).reshape(len(classes), n, -1)  # (P, N, D)
        probs = self.classifier.head(feats.to(self.classifier.head.weight.device)).softmax(-1).cpu()
        target = torch.tensor(classes)[:, None].expand(-1, n)  # (P, N)
        real_feats, real_labels = self._real
        keep = torch.ones_like(real_labels, dtype=torch.bool) if exclude is None else ~exclude
        per_prompt = []
        for p, digit in enumerate(classes):
            in_class = (real_labels == digit) & keep
            per_prompt.append({
                "fid": frechet_distance(real_feats[in_class], feats[p]),
                **knn_precision_recall_coverage(real_feats[in_class], feats[p], k=self.k),
            })
        metrics = {
            "diversity": self.diversity(feats),
            "class_prob": float(probs.gather(-1, target[..., None]).mean()),
            "accuracy": float((probs.argmax(-1) == target).double().mean()),
            "spectral": spectral,
        }
        for key in ("fid", "precision", "recall", "coverage"):
            metrics[key] = sum(m[key] for m in per_prompt) / len(per_prompt)
        metrics["fidelity"] = metrics["class_prob"] * metrics["precision"] * metrics["spectral"]
        return self.with_quality(metrics)


def _prompt_class(prompt: str) -> int:
    """The class a prompt names (`DigitsEvaluator.prompt_problem` says why one names none)."""
    digit = digits_data.parse_prompt(prompt)  # raises ValueError naming a malformed prompt
    if digit is None:
        raise ValueError(DigitsEvaluator.prompt_problem(prompt))
    return digit
