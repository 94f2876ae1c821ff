"""Tiny random-weight diffusers pipelines, saved to a folder: stand-ins for real weights in tests.

``make_tiny_sd3(dir)`` writes a whole `StableDiffusion3Pipeline` (MMDiT transformer, two CLIP
encoders with projection, a T5 encoder, a 16-channel VAE with ``scaling_factor`` and
``shift_factor``, the flow-matching scheduler with shift 3.0); ``make_tiny_sdxl(dir)`` a whole
`StableDiffusionXLPipeline` (a "text_time" UNet, CLIP + CLIP-with-projection, a 4-channel VAE,
the SDXL Euler scheduler). Both are laid out exactly as the hub's folders are, so the real
backbones load them through the same ``from_pretrained`` calls as real weights, with no network.

Sizes: at ``resolution=32`` a latent is (16, 16, 16) for SD3 and (4, 16, 16) for SDXL (the tiny
VAEs downsample 2x, the real ones 8x). The largest network, the UNet, has 0.26 M parameters, so a
DP-DMD iteration takes a fraction of a second on one CPU thread. Tokenizers are built in memory
from a character vocabulary (no downloads).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")
CLIP_MAX_LENGTH = 77  # the CLIP tokenizers' model_max_length, as the real ones
TEXT_DIM = 16  # CLIP hidden size; two concatenated = the T5 / joint-attention width below
PROJ_DIM = 16  # CLIP text projection; two concatenated = SD3's pooled projection


def clip_tokenizer():
    """A CLIPTokenizer over single characters (words end in ``</w>`` pieces), no merges."""
    from transformers import CLIPTokenizer

    vocab = ["<|startoftext|>", "<|endoftext|>", "!"] + CHARS + [c + "</w>" for c in CHARS]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=CLIP_MAX_LENGTH)


def t5_tokenizer():
    """A unigram T5TokenizerFast over single characters (plus T5's 100 extra ids)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -1.0) for c in CHARS] + [(c, -2.0) for c in CHARS]
    return T5TokenizerFast(vocab=pieces)


def clip_text_model(vocab_size: int, *, projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=32,
                            num_hidden_layers=2, num_attention_heads=2, projection_dim=PROJ_DIM,
                            max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae(*, latent_channels: int, scaling_factor: float, shift_factor: float | None, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
                         scaling_factor=scaling_factor, shift_factor=shift_factor,
                         use_quant_conv=shift_factor is None, use_post_quant_conv=shift_factor is None).eval()


def make_tiny_sd3(directory: str | Path) -> Path:
    """Write a tiny random `StableDiffusion3Pipeline` to ``directory``; returns the directory."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=16,
        pooled_projection_dim=2 * PROJ_DIM, pos_embed_max_size=32,
    )
    tok = clip_tokenizer()
    t5_tok = t5_tokenizer()
    torch.manual_seed(3)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=2 * TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2, relative_attention_num_buckets=8, decoder_start_token_id=0)).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, seed=4),
        text_encoder=clip_text_model(len(tok), projection=True, seed=1), tokenizer=tok,
        text_encoder_2=clip_text_model(len(tok), projection=True, seed=2), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(directory)
    return directory


def make_tiny_sdxl(directory: str | Path) -> Path:
    """Write a tiny random `StableDiffusionXLPipeline` to ``directory``; returns the directory."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    directory = Path(directory)
    time_dim = 8
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), norm_num_groups=8, cross_attention_dim=2 * TEXT_DIM, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * time_dim + PROJ_DIM,
    )
    tok = clip_tokenizer()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(
        unet=unet, scheduler=scheduler,
        vae=_vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, seed=4),
        text_encoder=clip_text_model(len(tok), projection=False, seed=1), tokenizer=tok,
        text_encoder_2=clip_text_model(len(tok), projection=True, seed=2), tokenizer_2=clip_tokenizer(),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.save_pretrained(directory)
    return directory
