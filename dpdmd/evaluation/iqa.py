"""No-reference image quality models through pyiqa (the ``iqa`` extra): MANIQA and others.

``pip install 'dpdmd-tune[iqa]'`` installs pyiqa, which needs torchvision and timm (the project's
core needs neither). Every model is built with ``pyiqa.create_metric(name, pretrained=False)``
and its weights are loaded from a LOCAL file (``InferenceModel.load_weights``), so nothing is
downloaded at run time: pyiqa itself downloads by default, and some architectures (MANIQA's
ViT-B/8) ask timm for ImageNet weights while they are built; those calls are made with
``pretrained=False`` here, since the released checkpoint holds the whole network and is loaded
with ``strict=True`` (a checkpoint that did not would fail to load, not score with random weights).

`PYIQA_MODELS` lists the names offered, each with the file of its weights in
``chaofengc/IQA-PyTorch-Weights``. Scores are per image, higher = better for these models.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Sequence

import torch
from PIL import Image

from .image_ops import to_tensor

WEIGHTS_HUB_ID = "chaofengc/IQA-PyTorch-Weights"
# name in quality_models -> (pyiqa metric name, weight file in WEIGHTS_HUB_ID, what it was trained on)
PYIQA_MODELS = {
    "maniqa": ("maniqa", "ckpt_koniq10k.pt", "MANIQA (ViT-B/8 + transposed attention), KonIQ-10k"),
    "maniqa_kadid": ("maniqa-kadid", "ckpt_kadid10k.pt", "MANIQA, KADID-10k"),
    "maniqa_pipal": ("maniqa-pipal", "MANIQA_PIPAL-ae6d356b.pth", "MANIQA, PIPAL"),
    "musiq": ("musiq", "musiq_koniq_ckpt-e95806b9.pth", "MUSIQ (multi-scale transformer), KonIQ-10k"),
}


def pyiqa_problem(key: str) -> str | None:
    """Why pyiqa cannot be used here (not installed, or torchvision missing), or None."""
    for module, why in (("torchvision", "pyiqa needs torchvision"), ("timm", "pyiqa needs timm"),
                        ("pyiqa", "pyiqa is not installed")):
        if importlib.util.find_spec(module) is None:
            return (f"{key}: {why}; install the iqa extra (`pip install 'dpdmd-tune[iqa]'`, with the torchvision "
                    "build that matches your torch)")
    return None


@contextlib.contextmanager
def _no_timm_downloads():
    """timm.create_model(..., pretrained=True) inside pyiqa's constructors builds without weights."""
    import timm

    original = timm.create_model

    def create_model(*args, **kwargs):
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original


class PyiqaScorer:
    """A pyiqa no-reference metric on RGB PIL images.

    Args:
        metric: the ``pyiqa.InferenceModel`` with its weights loaded.
        name: its name in the options (e.g. "maniqa").
    """

    def __init__(self, metric, name: str):
        self.metric, self.name = metric, name

    @torch.no_grad()
    def score_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Scores (B,) float64 on the CPU of RGB PIL images (one size per call or per image)."""
        scores = []
        for image in images:  # pyiqa takes [0, 1] tensors; images of a batch may differ in size
            pixels = to_tensor([image]).float() / 255.0
            scores.append(float(self.metric(pixels).reshape(-1)[0]))
        return torch.tensor(scores, dtype=torch.float64)


def load_pyiqa(name: str, weights: str, *, device: torch.device | str = "cpu", **metric_options) -> PyiqaScorer:
    """The `PYIQA_MODELS` entry ``name`` with its weights from the local file ``weights``;
    ``metric_options`` go to ``pyiqa.create_metric`` (e.g. MANIQA's ``test_sample``, the crops per image)."""
    import pyiqa

    metric_name = PYIQA_MODELS[name][0]
    with _no_timm_downloads():
        metric = pyiqa.create_metric(metric_name, as_loss=False, device=torch.device(device), pretrained=False,
                                     **metric_options)
    held = torch.load(weights, map_location="cpu", weights_only=False)
    metric.load_weights(weights, weight_keys="params" if isinstance(held, dict) and "params" in held else None)
    metric.eval()
    return PyiqaScorer(metric, name)


def check_pyiqa_weights(name: str, weights: str, key: str) -> list[str]:
    """Problems of a pyiqa entry: the package can be imported, the weight file exists."""
    problems = [p for p in [pyiqa_problem(key)] if p]
    if not os.path.isfile(weights):
        file = PYIQA_MODELS[name][1]
        problems.append(f"{key}: {weights} is not a file; download {file} from {WEIGHTS_HUB_ID} "
                        f"(`huggingface-cli download {WEIGHTS_HUB_ID} {file} --local-dir DIR`) and give its path")
    return problems
