"""HPSv2.1 (Wu et al., 2023), DMDR's reward, on transformers' CLIPModel.

HPSv2.1 is OpenCLIP's ViT-H/14 (laion2B-s32B-b79K) fine-tuned on human preferences; its release
(``xswu/HPSv2``: ``HPS_v2.1_compressed.pt``) is ``{"state_dict": ...}`` in open_clip's key layout.
`convert_open_clip` renames those keys onto a transformers ``CLIPModel`` whose architecture
(``config.json``) comes from the CLIP-H folder (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, the
model HPS was fine-tuned from, the same folder PickScore takes its processor from), and that
folder gives the tokenizer. So neither the ``hpsv2`` package (it pins ``pytest==7.2.0`` and
``protobuf<4``) nor open_clip is needed.

The score is HPS's own: the cosine of the L2-normalised image and prompt embeddings (no
temperature; about 0.25-0.35 for real images). The image is preprocessed as HPSv2's scoring
does (``create_model_and_transforms(..., light_augmentation=True)``): to a [0, 1] tensor, an
antialiased bicubic resize of the LONG side to the model's image size, black padding to a square,
OpenAI CLIP's mean and standard deviation (`dpdmd.evaluation.image_ops.resize_longest_pad_tensor`). Parity with open_clip:
``bench/hps_parity.py``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import torch
from PIL import Image

from .clip import ClipImageText
from .image_ops import resize_longest_pad_tensor

HUB_ID = "xswu/HPSv2"
CHECKPOINT_FILE = "HPS_v2.1_compressed.pt"
PROCESSOR_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
_BLOCK_RENAMES = [
    (r"ln_1\.", "layer_norm1."), (r"ln_2\.", "layer_norm2."), (r"attn\.out_proj\.", "self_attn.out_proj."),
    (r"mlp\.c_fc\.", "mlp.fc1."), (r"mlp\.c_proj\.", "mlp.fc2."),
]
_IGNORED = {"attn_mask", "visual.attn_mask"}  # open_clip's causal mask buffer, rebuilt by transformers


def _block(prefix: str, rest: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> bool:
    m = re.match(r"^transformer\.resblocks\.(\d+)\.(.*)$", rest)
    if not m:
        return False
    layer, tail = f"{prefix}encoder.layers.{m.group(1)}.", m.group(2)
    if tail in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = tail.rsplit("_", 1)[1]
        for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
            out[f"{layer}self_attn.{name}.{kind}"] = chunk.clone()
        return True
    for pattern, replacement in _BLOCK_RENAMES:
        if re.match(pattern, tail):
            out[layer + re.sub(pattern, replacement, tail, count=1)] = value
            return True
    return False


def convert_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict (ViT image tower, its own text tower) as a CLIPModel's.

    Raises:
        ValueError: keys the conversion does not know (another open_clip architecture).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DistributedDataParallel
    fixed = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    out, unknown = {}, []
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key == "visual.positional_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif key == "visual.proj":  # x @ proj in open_clip; a Linear's weight is its transpose
            out["visual_projection.weight"] = value.t().contiguous()
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key.startswith("visual.") and _block("vision_model.", key[len("visual."):], value, out):
            pass
        elif _block("text_model.", key, value, out):
            pass
        elif key not in _IGNORED:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not an open_clip ViT CLIP checkpoint (HPSv2's {CHECKPOINT_FILE}): unknown keys "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return out


class _HpsImages:
    """HPSv2's image transform as an image-processor callable (what `ClipFeatures` calls)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, images: Sequence[Image.Image], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        return {"pixel_values": resize_longest_pad_tensor(images, self.size)}


class HpsScore(ClipImageText):
    """HPSv2.1: ``cos(image, text)`` of the fine-tuned ViT-H/14 per image (no temperature)."""

    name = "hpsv21"

    def from_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine


def load_hps(checkpoint: str, processor_dir: str, *, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> HpsScore:
    """HPSv2.1 from its checkpoint file and the CLIP-H folder (config.json, tokenizer)."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint}: expected a dict with 'state_dict' (open_clip weights) as {CHECKPOINT_FILE} "
                         f"from {HUB_ID} holds, got {type(loaded).__name__}")
    config = CLIPConfig.from_pretrained(processor_dir)
    with torch.device("meta"):  # no random init of a billion parameters: the weights come from the file
        model = CLIPModel(config)
    converted = convert_open_clip(state)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(f"{checkpoint} does not fit the CLIP architecture of {processor_dir}/config.json "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the processor folder should be "
                         f"{PROCESSOR_HUB_ID}")
    model.load_state_dict(converted, assign=True)
    for module in model.modules():  # the non-persistent position_ids buffers are still on "meta"
        if isinstance(getattr(module, "position_ids", None), torch.Tensor) and module.position_ids.is_meta:
            module.position_ids = torch.arange(module.position_ids.shape[-1]).expand(1, -1)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return HpsScore(model, _HpsImages(config.vision_config.image_size), AutoTokenizer.from_pretrained(processor_dir))


def check_hps_paths(checkpoint: str, processor_dir: str, model_key: str, processor_key: str) -> list[str]:
    """Problems of an HPSv2.1 entry, reading only small files."""
    problems = []
    if not os.path.isfile(checkpoint):
        problems.append(f"{model_key}: {checkpoint} is not a file; download {CHECKPOINT_FILE} from {HUB_ID} "
                        f"(`huggingface-cli download {HUB_ID} {CHECKPOINT_FILE} --local-dir DIR`) and give its path")
    config_file = os.path.join(processor_dir, "config.json")
    if not os.path.isdir(processor_dir):
        problems.append(f"{processor_key}: {processor_dir} is not a directory; give the CLIP-H folder "
                        f"({PROCESSOR_HUB_ID}: config.json, tokenizer)")
        return problems
    try:
        with open(config_file) as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        problems.append(f"{processor_key}: {processor_dir} has no readable config.json ({err}); HPSv2.1's "
                        f"architecture is read from {PROCESSOR_HUB_ID}'s")
    else:
        if model_type != "clip":
            problems.append(f"{processor_key}: {config_file} has model_type {model_type!r}, expected 'clip' "
                            f"({PROCESSOR_HUB_ID})")
    if not (os.path.exists(os.path.join(processor_dir, "tokenizer.json")) or all(
            os.path.exists(os.path.join(processor_dir, n)) for n in ("vocab.json", "merges.txt"))):
        problems.append(f"{processor_key}: {processor_dir} has no tokenizer (tokenizer.json, or vocab.json and "
                        f"merges.txt of {PROCESSOR_HUB_ID})")
    return problems
