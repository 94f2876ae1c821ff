"""Tiny random checkpoints in the ORIGINAL layouts of ImageReward and HPSv2.1, made deterministically.

The released files are not transformers directories: ``ImageReward.pt`` is BLIP's state dict
(timm ViT keys, med.py BERT keys, ``mlp.layers.*``) beside ``med_config.json``;
``HPS_v2.1_compressed.pt`` is ``{"state_dict": open_clip ViT-H/14 keys}``. These builders write the
same layouts at a tiny size, every tensor drawn from one seeded generator in key order, so the
same files come out on every run: ``bench/imagereward_parity.py`` and ``bench/hps_parity.py`` score
them with the original implementations (which load them with ``strict=True``), and the tests
compare the project's scores with those stored numbers. Nothing here imports dpdmd.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# --- sizes ---
IR_VISION = dict(width=128, depth=2, mlp=256, patch=16, image=224)  # 2 heads of 64 (width / 64, as ViT-L)
IR_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
               max_position_embeddings=40)
IR_HEAD = (1024, 128, 64, 16, 1)  # the original MLP's fixed sizes after its input
HPS_VISION = dict(width=64, layers=2, heads=2, patch=14, image=56, mlp=256)
HPS_TEXT = dict(width=32, layers=2, heads=2, context=77, mlp=128)
HPS_EMBED = 16
WORDS = ["a", "an", "the", "of", "on", "in", "with", "photo", "cat", "dog", "red", "apple", "table", "car",
         "painting", "city", "night", "blue", "sky", "person", "wearing", "hat", "green", "field"]


def _fill(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors for ``shapes`` in key order: weights ~ N(0, 1 / fan_in), norms' weights
    1 + 0.1 N, biases 0.1 N, embeddings 0.5 N; integer buffers are aranges."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).expand(shape).clone()
        elif "norm" in key.lower() or ".ln_" in key or key.startswith("ln_"):
            base = 1.0 if key.endswith("weight") else 0.0
            state[key] = base + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key == "logit_scale":
            state[key] = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
        elif len(shape) >= 2 and key.endswith("weight") and "embedding" not in key:
            state[key] = torch.randn(shape, generator=gen) / int(np.prod(shape[1:])) ** 0.5
        else:  # embeddings, class / position tokens, projection matrices
            state[key] = 0.5 * torch.randn(shape, generator=gen)
    return state


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short hash of every tensor's bytes in key order (the builders' output is pinned by it)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --- ImageReward ---
def _bert_vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + letters + ["##" + c for c in letters]))


def imagereward_shapes(vocab_size: int) -> dict[str, tuple]:
    """Every key of ImageReward.pt (BLIP_Pretrain's visual_encoder, text_encoder, projections; the MLP)
    with its shape at the tiny sizes."""
    v, t = IR_VISION, IR_TEXT
    d, m, h, i = v["width"], v["mlp"], t["hidden_size"], t["intermediate_size"]
    tokens = 1 + (v["image"] // v["patch"]) ** 2
    shapes = {"blip.visual_encoder.cls_token": (1, 1, d), "blip.visual_encoder.pos_embed": (1, tokens, d),
              "blip.visual_encoder.patch_embed.proj.weight": (d, 3, v["patch"], v["patch"]),
              "blip.visual_encoder.patch_embed.proj.bias": (d,)}
    for b in range(v["depth"]):
        p = f"blip.visual_encoder.blocks.{b}."
        shapes.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "attn.qkv.weight": (3 * d, d),
                       p + "attn.qkv.bias": (3 * d,), p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
                       p + "norm2.weight": (d,), p + "norm2.bias": (d,), p + "mlp.fc1.weight": (m, d),
                       p + "mlp.fc1.bias": (m,), p + "mlp.fc2.weight": (d, m), p + "mlp.fc2.bias": (d,)})
    shapes.update({"blip.visual_encoder.norm.weight": (d,), "blip.visual_encoder.norm.bias": (d,)})
    p = "blip.text_encoder.embeddings."
    shapes.update({p + "position_ids": (1, t["max_position_embeddings"]), p + "word_embeddings.weight": (vocab_size, h),
                   p + "position_embeddings.weight": (t["max_position_embeddings"], h),
                   p + "LayerNorm.weight": (h,), p + "LayerNorm.bias": (h,)})
    for layer in range(t["num_hidden_layers"]):
        p = f"blip.text_encoder.encoder.layer.{layer}."
        for block, kv_width in (("attention", h), ("crossattention", d)):
            shapes.update({p + f"{block}.self.query.weight": (h, h), p + f"{block}.self.query.bias": (h,),
                           p + f"{block}.self.key.weight": (h, kv_width), p + f"{block}.self.key.bias": (h,),
                           p + f"{block}.self.value.weight": (h, kv_width), p + f"{block}.self.value.bias": (h,),
                           p + f"{block}.output.dense.weight": (h, h), p + f"{block}.output.dense.bias": (h,),
                           p + f"{block}.output.LayerNorm.weight": (h,), p + f"{block}.output.LayerNorm.bias": (h,)})
        shapes.update({p + "intermediate.dense.weight": (i, h), p + "intermediate.dense.bias": (i,),
                       p + "output.dense.weight": (h, i), p + "output.dense.bias": (h,),
                       p + "output.LayerNorm.weight": (h,), p + "output.LayerNorm.bias": (h,)})
    shapes.update({"blip.vision_proj.weight": (256, d), "blip.vision_proj.bias": (256,),
                   "blip.text_proj.weight": (256, h), "blip.text_proj.bias": (256,)})
    sizes = (h,) + IR_HEAD
    for n, index in enumerate((0, 2, 4, 6, 7)):  # nn.Sequential indices: dropouts between the linears
        shapes.update({f"mlp.layers.{index}.weight": (sizes[n + 1], sizes[n]), f"mlp.layers.{index}.bias": (sizes[n + 1],)})
    return shapes


def save_tiny_imagereward(root: str | Path, *, seed: int = 0) -> dict[str, str]:
    """``root/ImageReward`` (ImageReward.pt + med_config.json) and ``root/bert-tokenizer`` (a small
    WordPiece vocabulary, saved by transformers' BertTokenizer); returns ``{"model", "processor"}``."""
    from transformers import BertTokenizer

    root = Path(root)
    model_dir, tokenizer_dir = root / "ImageReward", root / "bert-tokenizer"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    (tokenizer_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(tokenizer_dir / "vocab.txt"), do_lower_case=True).save_pretrained(tokenizer_dir)
    vocab_size = len(vocab) + 2  # the original adds [DEC] and [ENC] to BERT's tokenizer (30522 + 2 = 30524)
    med_config = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                  "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
                  "model_type": "bert", "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab_size,
                  "encoder_width": 768, "add_cross_attention": True, **IR_TEXT}
    (model_dir / "med_config.json").write_text(json.dumps(med_config, indent=2))
    torch.save(_fill(imagereward_shapes(vocab_size), seed), model_dir / "ImageReward.pt")
    return {"model": str(model_dir), "processor": str(tokenizer_dir)}


# --- HPSv2.1 (open_clip layout) ---
def hps_shapes(vocab_size: int) -> dict[str, tuple]:
    """Every key of HPS_v2.1_compressed.pt's state_dict (open_clip CLIP with a ViT) at the tiny sizes."""
    v, t = HPS_VISION, HPS_TEXT
    d, w = v["width"], t["width"]
    shapes = {"positional_embedding": (t["context"], w), "text_projection": (w, HPS_EMBED), "logit_scale": (),
              "visual.class_embedding": (d,), "visual.positional_embedding": (1 + (v["image"] // v["patch"]) ** 2, d),
              "visual.proj": (d, HPS_EMBED), "visual.conv1.weight": (d, 3, v["patch"], v["patch"]),
              "visual.ln_pre.weight": (d,), "visual.ln_pre.bias": (d,)}

    def blocks(prefix: str, width: int, mlp: int, layers: int) -> None:
        for b in range(layers):
            p = f"{prefix}transformer.resblocks.{b}."
            shapes.update({p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                           p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                           p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                           p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                           p + "mlp.c_fc.weight": (mlp, width), p + "mlp.c_fc.bias": (mlp,),
                           p + "mlp.c_proj.weight": (width, mlp), p + "mlp.c_proj.bias": (width,)})

    blocks("visual.", d, v["mlp"], v["layers"])
    shapes.update({"visual.ln_post.weight": (d,), "visual.ln_post.bias": (d,),
                   "token_embedding.weight": (vocab_size, w)})
    blocks("", w, t["mlp"], t["layers"])
    shapes.update({"ln_final.weight": (w,), "ln_final.bias": (w,)})
    return shapes


def _clip_bpe(directory: Path) -> tuple[Path, Path, int]:
    """A small CLIP BPE vocabulary with <|endoftext|> the LAST id, as in CLIP's real vocabulary
    (open_clip pools the text at the highest token id)."""
    chars = list("abcdefghijklmnopqrstuvwxyz")
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("o", "n</w>")]
    tokens = ["!"] + chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return directory / "vocab.json", directory / "merges.txt", len(vocab)


def save_tiny_hps(root: str | Path, *, seed: int = 0) -> dict[str, str]:
    """``root/HPS_v2.1_compressed.pt`` (``{"state_dict": ...}`` in open_clip's layout) and
    ``root/clip-h`` (the CLIP-H folder's role: config.json of the architecture, tokenizer, image
    processor); returns ``{"model": FILE, "processor": DIR}``."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPTokenizer

    root = Path(root)
    processor_dir = root / "clip-h"
    processor_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file, vocab_size = _clip_bpe(processor_dir)
    CLIPTokenizer(str(vocab_file), str(merges_file), unk_token="<|endoftext|>", bos_token="<|startoftext|>",
                  eos_token="<|endoftext|>", pad_token="!", model_max_length=77).save_pretrained(processor_dir)
    v, t = HPS_VISION, HPS_TEXT
    eos = vocab_size - 1
    config = CLIPConfig(
        text_config=dict(hidden_size=t["width"], num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                         intermediate_size=t["mlp"], vocab_size=vocab_size, max_position_embeddings=t["context"],
                         hidden_act="gelu", bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=0),
        vision_config=dict(hidden_size=v["width"], num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
                           intermediate_size=v["mlp"], image_size=v["image"], patch_size=v["patch"], hidden_act="gelu"),
        projection_dim=HPS_EMBED)
    config.save_pretrained(processor_dir)
    CLIPImageProcessorPil(size={"shortest_edge": v["image"]}, crop_size={"height": v["image"], "width": v["image"]},
                          ).save_pretrained(processor_dir)
    model_file = root / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": _fill(hps_shapes(vocab_size), seed)}, model_file)
    return {"model": str(model_file), "processor": str(processor_dir)}


# --- images and prompts the parity runs score ---
PARITY_PROMPTS = ["a photo of a red cat", "the city at night", "an apple on the table"]


def parity_images(seed: int = 0) -> list[Image.Image]:
    """Six smooth random RGB images, square and not (300x240, 240x300: the crop's rounding matters)."""
    rng = np.random.default_rng(seed)
    sizes = [(256, 256), (256, 256), (300, 240), (240, 300), (224, 224), (512, 384)]
    images = []
    for w, h in sizes:
        coarse = rng.random((h // 16 + 1, w // 16 + 1, 3))
        image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        noise = rng.integers(-20, 21, size=(h, w, 3))
        images.append(Image.fromarray(np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8)))
    return images


# --- VisualQuality-R1 (a Qwen2.5-VL folder) ---
# Qwen2-VL's chat template, reduced to what one user message with images and text uses
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def save_tiny_visualquality_r1(directory: str | Path, *, seed: int = 0) -> Path:
    """A random Qwen2.5-VL (2 layers, width 32, vision patch 14, merge 2) with a byte-level BPE
    tokenizer, Qwen2-VL's image processor and chat template, saved with save_pretrained as the
    VisualQuality-R1-7B folder is laid out (config.json, model.safetensors, tokenizer.json,
    preprocessor_config.json, chat_template.jinja)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    directory = Path(directory)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(_QWEN_SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(directory)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(directory)
    return directory
