"""Cost per image of every evaluation metric: measured on tiny models (CPU), and at the real
models' shapes with random weights (the cost of a forward pass does not depend on the weights'
values), plus an estimate from parameter counts.

    PYTHONPATH=. python bench/metric_costs.py tiny                  # CPU, the tests' tiny models
    PYTHONPATH=. python bench/metric_costs.py real --device cuda    # real shapes, bf16, random weights
    PYTHONPATH=. python bench/metric_costs.py estimate              # 2 x parameters x tokens, this CPU's matmul rate

Each writes ``bench/results/metric_costs_<mode>[_<device>].json``. The real-shape mode builds each
architecture from its published configuration (CLIP ViT-L/14, DINOv3 ViT-L/16, CLIP ViT-H/14 for
PickScore and HPSv2.1, BLIP ViT-L/16 + BERT-base for ImageReward, Qwen2.5-VL-7B for
VisualQuality-R1, pyiqa's MANIQA) and times the project's own scorer on 1024 px images, batch 16
(preprocessing included). VisualQuality-R1 with random weights never ends its answer, so its time
is the prompt's forward pass plus ``--answer-tokens`` (10: "<answer>3.85</answer>") decoding steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

# published sizes: (parameters of what runs per image, tokens per image at the model's input size)
SIZES = {
    "clip (ViT-L/14 image tower)": (303e6, 257),
    "dinov3 (ViT-L/16)": (303e6, 201),
    "pickscore (CLIP ViT-H/14 image tower)": (632e6, 257),
    "hpsv21 (CLIP ViT-H/14 image tower)": (632e6, 257),
    "imagereward (BLIP ViT-L/16 + BERT-base, 35 text tokens)": (303e6 * 197 + 137e6 * 35, 1),
    "maniqa (ViT-B/8, 20 crops of 224)": (86e6, 785 * 20),
    "visualquality_r1 (Qwen2.5-VL-7B: ViT 0.67 B x 5476 patches + LLM 7.6 B x ~1470 tokens)":
        (0.67e9 * 5476 + 7.6e9 * 1470, 1),
}


def _time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after a warm-up (the least disturbed by other work
    on a shared machine)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _images(n: int, size: int):
    from dpdmd.evaluation.real import to_pil_images

    return to_pil_images(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)))


def tiny(args) -> dict:
    """Seconds per image of each scorer on the tests' tiny models (CPU), 32 px images, batch 8."""
    from dpdmd.evaluation.dino import DinoFeatures
    from dpdmd.evaluation.hps import load_hps
    from dpdmd.evaluation.image_ops import TorchImageProcessor
    from dpdmd.evaluation.imagereward import load_imagereward
    from dpdmd.evaluation.visualquality_r1 import load_visualquality_r1
    from tests.dpdmd import tiny_encoders
    from tests.dpdmd import tiny_reference_models as tiny_models
    from transformers import AutoModel, CLIPModel

    root = Path(tempfile.mkdtemp())
    images, prompts = _images(8, 32), ["a red disk"] * 8
    out = {}
    dino = AutoModel.from_pretrained(tiny_encoders.save_tiny_dinov3(root / "dinov3")).eval()
    processor = TorchImageProcessor({"size": {"height": 32, "width": 32}})
    out["dinov3"] = _time(lambda: DinoFeatures(dino, processor).embed_images(images), args.repeats) / 8
    clip_dir = tiny_encoders.save_tiny_clip(root / "clip")
    from dpdmd.evaluation.clip import ClipFeatures
    from transformers import AutoImageProcessor

    clip = ClipFeatures(CLIPModel.from_pretrained(clip_dir).eval(), AutoImageProcessor.from_pretrained(clip_dir))
    out["clip"] = _time(lambda: clip.embed_images(images), args.repeats) / 8
    from dpdmd.evaluation.pickscore import PickScore
    from transformers import AutoTokenizer

    pick = tiny_encoders.save_tiny_pickscore(root / "pickscore")
    pick_scorer = PickScore(CLIPModel.from_pretrained(pick["model"]).eval(),
                            AutoImageProcessor.from_pretrained(pick["processor"]),
                            AutoTokenizer.from_pretrained(pick["processor"]))
    out["pickscore"] = _time(lambda: pick_scorer.scores(pick_scorer.embed_images(images)[None],
                                                        pick_scorer.embed_texts(prompts[:1])), args.repeats) / 8
    ir = tiny_models.save_tiny_imagereward(root / "ir")
    scorer = load_imagereward(ir["model"], ir["processor"])
    out["imagereward"] = _time(lambda: scorer.score_pairs(images, prompts), args.repeats) / 8
    hps = tiny_models.save_tiny_hps(root / "hps")
    hps_scorer = load_hps(hps["model"], hps["processor"])
    out["hpsv21"] = _time(lambda: hps_scorer.scores(hps_scorer.embed_images(images)[None],
                                                    hps_scorer.embed_texts(prompts[:1])), args.repeats) / 8
    vq = load_visualquality_r1(str(tiny_models.save_tiny_visualquality_r1(root / "vq")), dtype=torch.float32,
                               max_new_tokens=args.answer_tokens)
    out["visualquality_r1"] = _time(lambda: vq.score_images(images), args.repeats) / 8
    return {"seconds_per_image": out, "images": "8 of 32 px", "threads": torch.get_num_threads()}


def _real_models(device, dtype):
    """name -> a function scoring a batch of PIL images, each built at its published shape."""
    import transformers as tf

    from dpdmd.evaluation.clip import ClipFeatures
    from dpdmd.evaluation.dino import DinoFeatures
    from dpdmd.evaluation.hps import HpsScore, _HpsImages
    from dpdmd.evaluation.image_ops import TorchImageProcessor
    from dpdmd.evaluation.imagereward import ImageReward, RewardHead
    from dpdmd.evaluation.pickscore import PickScore

    def place(model):
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    clip_processor = tf.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    vit_l = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    yield "clip", lambda: ClipFeatures(place(tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(
        **vit_l, patch_size=14, image_size=224, projection_dim=768))), clip_processor).embed_images
    yield "dinov3", lambda: DinoFeatures(place(tf.DINOv3ViTModel(tf.DINOv3ViTConfig(
        **vit_l, patch_size=16, image_size=224, num_register_tokens=4))),
        TorchImageProcessor({"size": {"height": 224, "width": 224}})).embed_images
    clip_h = tf.CLIPConfig(
        text_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                         hidden_act="gelu"),
        vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
                           patch_size=14, image_size=224, hidden_act="gelu"), projection_dim=1024)
    tokenizer = None  # texts are embedded once per prompt: the image tower is the cost per image
    yield "pickscore", lambda: PickScore(place(tf.CLIPModel(clip_h)), clip_processor, tokenizer).embed_images
    yield "hpsv21", lambda: HpsScore(place(tf.CLIPModel(clip_h)), _HpsImages(224), tokenizer).embed_images

    def imagereward():
        vision = tf.BlipVisionModel(tf.BlipVisionConfig(**vit_l, patch_size=16, image_size=224, layer_norm_eps=1e-6))
        text = tf.BlipTextModel(tf.BlipTextConfig(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024,
                                                  num_hidden_layers=12, num_attention_heads=12,
                                                  intermediate_size=3072, is_decoder=True), add_pooling_layer=False)
        tok_dir = Path(tempfile.mkdtemp())
        (tok_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat"]))
        scorer = ImageReward(vision, text, RewardHead([768, 1024, 128, 64, 16, 1]),
                             tf.BertTokenizer(vocab=str(tok_dir / "vocab.txt")), device=device, dtype=dtype)
        return lambda images: scorer.score_pairs(images, ["a cat"] * len(images))

    yield "imagereward", imagereward

    def maniqa():
        from dpdmd.evaluation.iqa import PyiqaScorer, _no_timm_downloads
        import pyiqa

        with _no_timm_downloads():
            metric = pyiqa.create_metric("maniqa", device=torch.device(device), pretrained=False)
        return PyiqaScorer(metric, "maniqa").score_images

    yield "maniqa", maniqa


def real(args) -> dict:
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    images = _images(args.batch, args.size)
    out, errors = {}, {}
    for name, build in _real_models(device, dtype):
        if args.only and name not in args.only:
            continue
        try:
            torch.manual_seed(0)
            score = build()
            out[name] = _time(lambda: score(images), args.repeats) / len(images)
        except Exception as err:  # one missing package must not lose the other measurements
            errors[name] = f"{type(err).__name__}: {err}"
        print(name, out.get(name), errors.get(name), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.only or "visualquality_r1" in args.only:
        try:
            out["visualquality_r1"] = _vq_real(device, dtype, args)
        except Exception as err:
            errors["visualquality_r1"] = f"{type(err).__name__}: {err}"
        print("visualquality_r1", out.get("visualquality_r1"), errors.get("visualquality_r1"), flush=True)
    return {"seconds_per_image": out, "errors": errors, "images": f"{args.batch} of {args.size} px",
            "dtype": args.dtype, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()}


def _vq_real(device, dtype, args) -> float:
    """Qwen2.5-VL-7B's shapes: the scorer's own inputs, the prompt's forward + answer tokens."""
    import transformers as tf

    from dpdmd.evaluation.visualquality_r1 import VisualQualityR1
    from tests.dpdmd.tiny_reference_models import QWEN_VL_CHAT_TEMPLATE, _QWEN_SPECIALS

    directory = Path(tempfile.mkdtemp())
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    backend.add_special_tokens(_QWEN_SPECIALS)
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = tf.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, rope_theta=1e6),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    with torch.device(device):
        model = tf.Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval().requires_grad_(False)
    processor = tf.Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
    scorer = VisualQualityR1(model, processor, tokenizer, QWEN_VL_CHAT_TEMPLATE, max_new_tokens=args.answer_tokens)
    images = _images(args.vq_batch, args.size)
    return _time(lambda: scorer.score_images(images), 1) / len(images)


def estimate(args) -> dict:
    """2 x parameters x tokens per image, and its time at this machine's measured fp32 matmul rate."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    rate = 2 * n ** 3 / _time(lambda: a @ b, 5)
    return {"cpu_matmul_flops_per_s": rate, "threads": torch.get_num_threads(),
            "per_image": {name: {"gflop": 2 * p * t / 1e9, "cpu_seconds_at_matmul_rate": 2 * p * t / rate}
                          for name, (p, t) in SIZES.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("tiny", "real", "estimate"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vq-batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=10)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {"tiny": tiny, "real": real, "estimate": estimate}[args.mode](args)
    result.update(command=" ".join(sys.argv), python=platform.python_version(), torch=torch.__version__)
    suffix = f"_{args.device}" if args.mode == "real" else ""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"metric_costs_{args.mode}{suffix}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
