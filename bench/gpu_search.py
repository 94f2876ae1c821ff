"""A DP-DMD search on one GPU, end to end (issue 11, section 3): builds the weights, writes the space.

    python bench/gpu_search.py --root /tmp/gpu_search          # on the GPU machine, then:
    python -m tune.search --space /tmp/gpu_search/space.yaml --storage /tmp/gpu_search/runs

Writes under ``--root``:

- ``sd35m/``: a `StableDiffusion3Pipeline` saved with ``save_pretrained``, random weights. The
  transformer has SD3.5-Medium's config (`bench.gpu_step.sd35m_config`: 2.24 B parameters, 24
  layers, dual attention in 0-12, joint attention 4096, pooled 2048) in bf16; the text encoders
  are tiny with SD3.5's output widths (two CLIPs projecting to 1024 + 1024 = 2048 pooled, a
  one-layer T5 of width 4096); the VAE is small but with SD3's 8x downsampling and 16 latent
  channels, so a 512 px image is a 64x64x16 latent as in SD3.5. The ``sd35m`` backbone loads it
  from the folder like the real weights.
- ``eval/``: tiny DINOv2 (diversity) and PickScore-layout CLIP (quality) for the real evaluator.
- ``space.yaml``: sd35m LoRA r64 trials on the GPU, two at a time (``gpu: 0.5``), ASHA, the
  anchor cache, K in {5, 10} with lambda_div 0.05 plus the vanilla-DMD baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_step import sd35m_config  # noqa: E402
from tests.dpdmd import tiny_encoders  # noqa: E402
from tests.dpdmd.tiny_pipelines import CLIP_MAX_LENGTH, clip_tokenizer, t5_tokenizer  # noqa: E402


def clip_with_projection(vocab: int, projection: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        projection_dim=projection, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, hidden_act="gelu")).eval()


def make_sd35m_pipeline(directory: Path, device: str, tiny: bool = False) -> Path:
    """SD3.5-M's transformer (random, bf16) with tiny text encoders and VAE of SD3's widths."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import T5Config, T5EncoderModel

    cfg = sd35m_config(tiny=tiny)
    width, pooled = cfg["joint_attention_dim"], cfg["pooled_projection_dim"]
    torch.manual_seed(0)
    with torch.device(device):  # initialising 2.24 B weights on the GPU: seconds, not minutes
        transformer = SD3Transformer2DModel(**cfg).to(torch.bfloat16)
    tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(3)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=width, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2, relative_attention_num_buckets=8, decoder_start_token_id=0)).eval()
    torch.manual_seed(4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip_with_projection(len(tok), pooled // 2, 1), tokenizer=tok,
        text_encoder_2=clip_with_projection(len(tok), pooled // 2, 2), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tok)
    pipe.save_pretrained(directory)
    return directory


def positive_pickscore(root: Path) -> dict[str, str]:
    """The tiny PickScore-layout model, changed so that its score is positive for every image.

    With random weights the cosine of image and prompt has a random sign, and a negative teacher
    quality cannot normalise the combined objective (`tune.trial.objective`). Here both towers' last
    LayerNorm outputs a constant and both projections map it to one direction: the score is
    ``logit_scale`` (50) for every image. Quality is then a constant placeholder and ASHA ranks
    trials on diversity alone: this run tests the machinery, not the quality of random weights.
    """
    from transformers import CLIPModel

    paths = tiny_encoders.save_tiny_pickscore(root)
    model = CLIPModel.from_pretrained(paths["model"])
    with torch.no_grad():
        for norm in (model.text_model.final_layer_norm, model.vision_model.post_layernorm):
            norm.weight.zero_()
            norm.bias.fill_(1.0)
        for proj in (model.text_projection, model.visual_projection):
            proj.weight.fill_(1.0 / proj.weight.shape[1])
    model.save_pretrained(paths["model"])
    return paths


def space(root: Path, args) -> dict:
    pick = positive_pickscore(root / "eval" / "pickscore")
    dino = str(tiny_encoders.save_tiny_dinov2(root / "eval" / "dinov2"))
    return {
        "name": "gpu_e2e", "method": "grid", "seed": 0, "max_concurrent": 2,
        "backbones": {"sd35m": {"resources": {"cpu": 4, "gpu": 0.5}, "options": {
            "path": str(root / "sd35m"), "train_mode": "lora", "lora_rank": 64, "gradient_checkpointing": True,
            "resolution": args.resolution, "max_sequence_length": 77}}},
        "parameters": {"backbone": {"values": ["sd35m"]}, "anchor_k": {"values": [5, 10]},
                       "lambda_div": {"values": [0.05]}},
        "train": {"teacher_steps": 30, "batch_size": args.batch, "iterations": args.iterations,
                  "mixed_precision": "bf16", "device": "cuda", "compile": False},
        "eval": {"seeds_per_prompt": 2, "every": 1, "prompts": ["a dog", "a red car"], "evaluator": "real",
                 "quality_metric": "pickscore",
                 "evaluator_options": {"diversity_encoders": {"dinov2": dino}, "quality_models": {"pickscore": pick}}},
        "objective": {"diversity_weight": 0.5},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "wandb": {"enabled": True, "project": "dpdmd-tune"},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/gpu_search"))
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=18, help="3 student updates with fake_updates 5")
    ap.add_argument("--tiny", action="store_true", help="tiny transformer (checks the script on the CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    make_sd35m_pipeline(args.root / "sd35m", args.device, args.tiny)
    print(f"pipeline saved to {args.root / 'sd35m'} in {time.perf_counter() - t0:.0f} s", flush=True)
    (args.root / "space.yaml").write_text(yaml.safe_dump(space(args.root, args), sort_keys=False))
    print(f"space: {args.root / 'space.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
