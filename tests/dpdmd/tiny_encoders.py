"""Tiny random-weight stand-ins for the real evaluators' models, saved the way users get them.

Each builder writes a local transformers directory (``save_pretrained`` of the model, its image
processor and, for CLIP, its tokenizer) that `dpdmd.evaluation.make_real_evaluator` then loads back
through the same ``from_pretrained(dir)`` path as DINOv2 / CLIP ViT-L/14 / PickScore_v1. Nothing is
downloaded: configs are tiny (hidden size 32, 2 layers, 32x32 images, patch 8) and the CLIP
tokenizer reads a small BPE vocabulary written to the directory.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
import transformers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Dinov2Config, Dinov2Model

IMAGE_SIZE = 32
PATCH_SIZE = 8
_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _processor_class(name: str):
    """The torchvision-backed image processor when torchvision is installed, else its PIL twin
    (transformers 5 falls back the same way, with a warning this avoids)."""
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, name + "Pil"):
        return getattr(transformers, name + "Pil")
    return getattr(transformers, name)


def _vit_sizes() -> dict:
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)


def save_dino_processor(directory: str | Path) -> Path:
    """DINOv2's image processor (resize the short side, centre-crop, ImageNet normalisation) at 32 px."""
    directory = Path(directory)
    processor = _processor_class("BitImageProcessor")(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)
    processor.save_pretrained(directory)
    return directory


def save_tiny_dinov2(directory: str | Path, *, seed: int = 0) -> Path:
    """A random DINOv2 model plus its image processor in ``directory`` (returned)."""
    directory = Path(directory)
    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**_vit_sizes())).save_pretrained(directory)
    return save_dino_processor(directory)


def save_tiny_dinov3(directory: str | Path, *, seed: int = 0) -> Path:
    """A random DINOv3 ViT model (no image processor: DINOv3's needs torchvision; pair it with
    `save_dino_processor` through the ``{model, processor}`` form of the options)."""
    directory = Path(directory)
    torch.manual_seed(seed)
    config = transformers.DINOv3ViTConfig(**_vit_sizes(), num_register_tokens=0)
    transformers.DINOv3ViTModel(config).save_pretrained(directory)
    return directory


def _write_bpe_files(directory: Path) -> tuple[Path, Path]:
    """A small CLIP BPE vocabulary: letters and digits (alone and word-final) plus a few merges."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "f</w>")]
    tokens = [_BOS, _EOS] + chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return vocab_file, merges_file


def save_clip_processor(directory: str | Path) -> Path:
    """CLIP's image processor (32 px) and a small-vocabulary CLIPTokenizer in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = _write_bpe_files(directory)
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), unk_token=_EOS, bos_token=_BOS,
                              eos_token=_EOS, pad_token=_EOS, model_max_length=16)
    tokenizer.save_pretrained(directory)
    processor = _processor_class("CLIPImageProcessor")(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=_CLIP_MEAN, image_std=_CLIP_STD)
    processor.save_pretrained(directory)
    return directory


def _tiny_clip(seed: int, logit_scale: float | None) -> CLIPModel:
    tokenizer_ids = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # see _write_bpe_files
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                vocab_size=128, max_position_embeddings=16, **tokenizer_ids)
    config = CLIPConfig(text_config=text, vision_config=_vit_sizes(), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    if logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(logit_scale))
    return model


def save_tiny_clip(directory: str | Path, *, seed: int = 0, agreeing: bool = False) -> Path:
    """A random CLIPModel with its image processor and tokenizer in one directory (as
    openai/clip-vit-large-patch14 comes): the CLIP diversity encoder and the CLIP score.

    ``agreeing``: the text and image embeddings share one dominant direction (the final norms'
    biases through all-positive projections), so every caption-image cosine is near 1 and the
    CLIP score is positive whatever the seed: a teacher scored by it can normalise a search's
    quality (a random CLIP's cosines have either sign, and the CLIP score clips them at 0)."""
    directory = Path(directory)
    model = _tiny_clip(seed, None)
    if agreeing:
        with torch.no_grad():
            for norm, projection in ((model.text_model.final_layer_norm, model.text_projection),
                                     (model.vision_model.post_layernorm, model.visual_projection)):
                norm.weight.mul_(0.01)
                norm.bias.fill_(1.0)
                projection.weight.abs_()
    model.save_pretrained(directory)
    return save_clip_processor(directory)


def save_tiny_pickscore(root: str | Path, *, seed: int = 1, logit_scale: float = 50.0) -> dict[str, str]:
    """PickScore's layout: the processor (CLIP-H's, here tiny) and the model (PickScore_v1, a
    CLIPModel, here with exp(logit_scale) = ``logit_scale``) in two directories under ``root``.

    Returns the ``{"processor": dir, "model": dir}`` mapping the evaluator options take.
    """
    root = Path(root)
    processor_dir = save_clip_processor(root / "clip-h-processor")
    model_dir = root / "pickscore-model"
    _tiny_clip(seed, logit_scale).save_pretrained(model_dir)
    return {"processor": str(processor_dir), "model": str(model_dir)}
