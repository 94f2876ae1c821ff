"""ImageReward (Xu et al., 2023), the reference's second preference score, on transformers' BLIP modules.

The released checkpoint (``THUDM/ImageReward``: ``ImageReward.pt`` + ``med_config.json``) is a BLIP
model: a ViT image encoder (ViT-L/16 at 224 px), a BERT text encoder whose layers cross-attend to
the image tokens (``med_config.json``), and an MLP head on the text's [CLS] state. Its score of an
image for a prompt is ``(head(cls) - 0.16717362830052426) / 1.0333394966054072`` (the published
mean and standard deviation of the raw reward).

The checkpoint's keys (``blip.visual_encoder.*``, timm's ViT layout; ``blip.text_encoder.*``,
BLIP's med.py layout; ``mlp.layers.*``) are converted onto transformers' ``BlipVisionModel`` and
``BlipTextModel`` (`convert_checkpoint`), so the original package (which needs transformers < 5,
timm 0.6.13 and fairscale) is not needed. The vision size is read from the weights (heads: width
/ 64, as ViT-B and ViT-L have); the text size from ``med_config.json``.

The prompt is tokenised by ``bert-base-uncased``'s tokenizer (the original fetches it from the
Hub; here it is a local directory), padded to 35 tokens; the image is resized (short side, PIL
bicubic) and centre-cropped to 224 px with CLIP's mean and standard deviation, as the original.
Parity with the original implementation: ``bench/imagereward_parity.py``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from .image_ops import resize_center_crop_pil

CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
HUB_ID = "THUDM/ImageReward"
TOKENIZER_HUB_ID = "google-bert/bert-base-uncased"
REWARD_MEAN = 0.16717362830052426  # published normalisation of the raw reward (ImageReward.py)
REWARD_STD = 1.0333394966054072
MAX_PROMPT_TOKENS = 35  # the original pads / truncates every prompt to 35 tokens
IMAGE_SIZE = 224
VISION_HEAD_DIM = 64
_UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")  # BLIP's contrastive projections: not in the score
_VISION_RENAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.", r"encoder.layers.\1.mlp.fc\2."),
    (r"^norm\.", "post_layernorm."),
]


def _rename(key: str, rules) -> str | None:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def convert_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split and rename an ImageReward state dict: ``{"vision": ..., "text": ..., "head": ...}``, the
    state dicts of a ``BlipVisionModel``, a ``BlipTextModel`` (no pooler) and `RewardHead`.

    Raises:
        ValueError: a key the conversion does not know (the file is not ImageReward's).
    """
    vision, text, head, unknown = {}, {}, {}, []
    head_linears = sorted({int(m.group(1)) for k in state if (m := re.match(r"^mlp\.layers\.(\d+)\.", k))})
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            new = _rename(key[len("blip.visual_encoder."):], _VISION_RENAMES)
            (vision.__setitem__(new, value) if new else unknown.append(key))
        elif key.startswith("blip.text_encoder."):
            new = key[len("blip.text_encoder."):]
            if new == "embeddings.position_ids":  # a buffer (0..max_positions-1), rebuilt by the model
                continue
            text[new] = value
        elif m := re.match(r"^mlp\.layers\.(\d+)\.(weight|bias)$", key):
            head[f"layers.{head_linears.index(int(m.group(1)))}.{m.group(2)}"] = value
        elif not key.startswith(_UNUSED_PREFIXES):
            unknown.append(key)
    if unknown or not vision or not text or not head:
        raise ValueError(f"not an ImageReward checkpoint: unknown keys {unknown[:5]}, or no vision / text / "
                         f"head weights (found {len(vision)} / {len(text)} / {len(head)}); expected "
                         f"{CHECKPOINT_FILE} from {HUB_ID}")
    return {"vision": vision, "text": text, "head": head}


class RewardHead(nn.Module):
    """The MLP on the [CLS] state: linear layers without activations (dropout only in training)."""

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _vision_config(vision: dict[str, torch.Tensor]):
    from transformers import BlipVisionConfig

    positions, width = vision["embeddings.position_embedding"].shape[1:]
    patch = vision["embeddings.patch_embedding.weight"].shape[-1]
    grid = int(round((positions - 1) ** 0.5))
    layers = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    return BlipVisionConfig(hidden_size=width, intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
                            num_hidden_layers=layers, num_attention_heads=max(1, width // VISION_HEAD_DIM),
                            image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6)


def _text_config(med_config: dict, encoder_width: int):
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=med_config["vocab_size"], hidden_size=med_config["hidden_size"],
        encoder_hidden_size=encoder_width, intermediate_size=med_config["intermediate_size"],
        num_hidden_layers=med_config["num_hidden_layers"], num_attention_heads=med_config["num_attention_heads"],
        max_position_embeddings=med_config["max_position_embeddings"],
        hidden_act=med_config.get("hidden_act", "gelu"), layer_norm_eps=med_config.get("layer_norm_eps", 1e-12),
        pad_token_id=med_config.get("pad_token_id", 0), bos_token_id=None, eos_token_id=None, sep_token_id=None,
        is_decoder=True)  # is_decoder: build the cross-attention


def load_imagereward(model_dir: str, tokenizer_dir: str, *, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> "ImageReward":
    """ImageReward from ``model_dir`` (``ImageReward.pt`` and ``med_config.json``) and the BERT
    tokenizer in ``tokenizer_dir`` (bert-base-uncased's files)."""
    from transformers import AutoTokenizer, BlipTextModel, BlipVisionModel

    with open(os.path.join(model_dir, MED_CONFIG_FILE)) as f:
        med_config = json.load(f)
    state = torch.load(os.path.join(model_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    parts = convert_checkpoint(state)
    vision = BlipVisionModel(_vision_config(parts["vision"]))
    text = BlipTextModel(_text_config(med_config, vision.config.hidden_size), add_pooling_layer=False)
    sizes = [parts["head"]["layers.0.weight"].shape[1]] + [
        parts["head"][f"layers.{i}.weight"].shape[0] for i in range(len(parts["head"]) // 2)]
    head = RewardHead(sizes)
    for module, sd, what in ((vision, parts["vision"], "image encoder"), (text, parts["text"], "text encoder"),
                             (head, parts["head"], "reward head")):
        missing, unexpected = module.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{model_dir}/{CHECKPOINT_FILE}: the {what} does not match med_config.json "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}); are the two files from "
                             f"the same {HUB_ID} download?")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return ImageReward(vision, text, head, tokenizer, device=device, dtype=dtype)


class ImageReward:
    """The ImageReward score of (image, prompt) pairs.

    Args:
        vision, text, head: the converted ``BlipVisionModel``, ``BlipTextModel`` and `RewardHead`.
        tokenizer: bert-base-uncased's tokenizer.
    """

    name = "imagereward"

    def __init__(self, vision: nn.Module, text: nn.Module, head: nn.Module, tokenizer, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.vision = vision.to(self.device, dtype).eval().requires_grad_(False)
        self.text = text.to(self.device, dtype).eval().requires_grad_(False)
        self.head = head.to(self.device, torch.float32).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = vision.config.image_size

    @torch.no_grad()
    def score_pairs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        """Scores (B,) float32 on the CPU of B images, image b with prompt b."""
        if len(images) != len(prompts):
            raise ValueError(f"score_pairs takes one prompt per image, got {len(images)} images and {len(prompts)} prompts")
        pixels = resize_center_crop_pil(images, self.image_size).to(self.device, self.dtype)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state  # (B, 1 + patches, width)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS,
                                return_tensors="pt").to(self.device)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
        reward = self.head(out.last_hidden_state[:, 0].float()).squeeze(-1)
        return ((reward - REWARD_MEAN) / REWARD_STD).cpu()

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise TypeError("ImageReward scores (image, prompt) pairs jointly (cross-attention); use score_pairs")


def check_imagereward_dirs(model_dir: str, tokenizer_dir: str, model_key: str, tokenizer_key: str) -> list[str]:
    """Problems of an ImageReward entry, reading only small files: the two files in ``model_dir``,
    a BERT tokenizer in ``tokenizer_dir``."""
    problems = []
    if not os.path.isdir(model_dir):
        problems.append(f"{model_key}: {model_dir} is not a directory; download {CHECKPOINT_FILE} and "
                        f"{MED_CONFIG_FILE} from {HUB_ID} into it (`huggingface-cli download {HUB_ID} "
                        f"--local-dir DIR`)")
    else:
        for name in (CHECKPOINT_FILE, MED_CONFIG_FILE):
            if not os.path.isfile(os.path.join(model_dir, name)):
                problems.append(f"{model_key}: {model_dir} has no {name} (from {HUB_ID})")
    if not os.path.isdir(tokenizer_dir):
        problems.append(f"{tokenizer_key}: {tokenizer_dir} is not a directory; give the BERT tokenizer "
                        f"ImageReward was trained with ({TOKENIZER_HUB_ID}: vocab.txt, tokenizer_config.json)")
    elif not any(os.path.isfile(os.path.join(tokenizer_dir, n)) for n in ("vocab.txt", "tokenizer.json")):
        problems.append(f"{tokenizer_key}: {tokenizer_dir} has no BERT tokenizer (vocab.txt or tokenizer.json "
                        f"of {TOKENIZER_HUB_ID})")
    return problems
