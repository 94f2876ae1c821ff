"""HPSv2.1 parity: the project's CLIPModel port against HPSv2's own open_clip code.

Three steps, two environments:

    # 1. project environment: a tiny checkpoint in HPS_v2.1_compressed.pt's layout, the CLIP-H
    #    folder's role (config.json, tokenizer), the images, the prompts' token ids
    PYTHONPATH=. python bench/hps_parity.py make /tmp/hps-parity
    # 2. an environment of its own with torchvision, ftfy, regex, timm (the ImageReward venv of
    #    bench/imagereward_parity.py serves) and HPSv2's repository (github tgxs002/HPSv2):
    python bench/hps_parity.py original /tmp/hps-parity --hpsv2-src /tmp/hpsv2-src
    # 3. project environment: the port scores them and the two are compared
    PYTHONPATH=. python bench/hps_parity.py ours /tmp/hps-parity

Step 2 imports ``hpsv2.src.open_clip`` from the repository (without ``hpsv2/__init__.py``, which
imports the scoring script's download helpers), registers the tiny architecture as a model
config, builds it with ``create_model_and_transforms(..., output_dict=True)`` as
``hpsv2/img_score.py`` does, loads the checkpoint's ``state_dict`` with ``strict=True``, and scores
as img_score.py: ``diag(image_features @ text_features.T)`` of its ``preprocess_val`` images. The
token ids are the tiny tokenizer's (CLIP's BPE; the real run would use the same BPE through the
CLIP-H folder), padded with 0 to 77 as open_clip's tokenizer does. Step 3 writes
``bench/results/hps_parity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imagereward_parity import ROOT, _pairs, _versions  # noqa: E402

RESULT = ROOT / "bench" / "results" / "hps_parity.json"
TOLERANCE = 1e-5


def make(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from tests.dpdmd import tiny_reference_models as tiny

    paths = tiny.save_tiny_hps(folder)
    for i, image in enumerate(tiny.parity_images()):
        image.save(folder / f"image{i}.png")
    (folder / "prompts.json").write_text(json.dumps(tiny.PARITY_PROMPTS))
    tokenizer = AutoTokenizer.from_pretrained(paths["processor"])
    ids = [tokenizer(p)["input_ids"] for p in tiny.PARITY_PROMPTS]
    (folder / "token_ids.json").write_text(json.dumps([row + [0] * (77 - len(row)) for row in ids]))
    config = {"embed_dim": tiny.HPS_EMBED,
              "vision_cfg": {"image_size": tiny.HPS_VISION["image"], "layers": tiny.HPS_VISION["layers"],
                             "width": tiny.HPS_VISION["width"],
                             "head_width": tiny.HPS_VISION["width"] // tiny.HPS_VISION["heads"],
                             "patch_size": tiny.HPS_VISION["patch"]},
              "text_cfg": {"context_length": 77, "vocab_size": tokenizer.vocab_size, "width": tiny.HPS_TEXT["width"],
                           "heads": tiny.HPS_TEXT["heads"], "layers": tiny.HPS_TEXT["layers"]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    print(json.dumps(paths))


def original(folder: Path, hpsv2_src: Path) -> None:
    import torch

    for name, path in (("hpsv2", hpsv2_src / "hpsv2"), ("hpsv2.src", hpsv2_src / "hpsv2" / "src")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    sys.modules.setdefault("turtle", types.ModuleType("turtle"))  # factory.py's stray `from turtle import forward`
    sys.modules["turtle"].forward = None
    from hpsv2.src.open_clip import create_model_and_transforms, factory

    factory._MODEL_CONFIGS["tiny-hps"] = json.loads((folder / "open_clip_config.json").read_text())
    model, _, preprocess_val = create_model_and_transforms(
        "tiny-hps", None, precision="fp32", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    checkpoint = torch.load(folder / "HPS_v2.1_compressed.pt", map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    model.eval()
    prompts = json.loads((folder / "prompts.json").read_text())
    ids = json.loads((folder / "token_ids.json").read_text())
    scores = []
    with torch.no_grad():
        for prompt, image in _pairs(folder):
            text = torch.tensor([ids[prompts.index(prompt)]])
            outputs = model(preprocess_val(image).unsqueeze(0), text)
            logits = outputs["image_features"] @ outputs["text_features"].T
            scores.append(float(torch.diagonal(logits)[0]))
    out = {"scores": scores, "hpsv2_commit": "866735ecaae999fa714bd9edfa05aa2672669ee3",
           "versions": _versions("torch", "torchvision", "timm", "ftfy", "numpy", "pillow")}
    (folder / "original.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def ours(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from dpdmd.evaluation.hps import load_hps
    from tests.dpdmd.tiny_reference_models import state_digest

    reference = json.loads((folder / "original.json").read_text())
    scorer = load_hps(str(folder / "HPS_v2.1_compressed.pt"), str(folder / "clip-h"))
    pairs = _pairs(folder)
    prompts = json.loads((folder / "prompts.json").read_text())
    image_embeds = scorer.embed_images([image for _, image in pairs])  # (6, D), normalised
    text_embeds = scorer.embed_texts(prompts)[[prompts.index(p) for p, _ in pairs]]
    scores = scorer.scores(image_embeds[:, None], text_embeds)[:, 0].tolist()
    diff = max(abs(a - b) for a, b in zip(scores, reference["scores"]))
    state = torch.load(folder / "HPS_v2.1_compressed.pt", map_location="cpu", weights_only=True)["state_dict"]
    result = {
        "what": "HPSv2.1 score of 6 (prompt, image) pairs, tiny random checkpoint in open_clip's layout",
        "commands": ["PYTHONPATH=. python bench/hps_parity.py make /tmp/hps-parity",
                     "/tmp/ir-venv/bin/python bench/hps_parity.py original /tmp/hps-parity --hpsv2-src /tmp/hpsv2-src",
                     "PYTHONPATH=. python bench/hps_parity.py ours /tmp/hps-parity"],
        "checkpoint_digest": state_digest(state), "hpsv2_commit": reference["hpsv2_commit"],
        "original": reference["scores"], "ours": scores, "max_abs_difference": diff, "tolerance": TOLERANCE,
        "original_environment": reference["versions"],
        "project_environment": _versions("torch", "transformers", "numpy", "pillow"),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if diff > TOLERANCE:
        raise SystemExit(f"parity FAILED: max |difference| {diff:.3g} > {TOLERANCE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("make", "original", "ours"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--hpsv2-src", type=Path, default=Path("/tmp/hpsv2-src"),
                        help="a checkout of github tgxs002/HPSv2 (the folder holding hpsv2/)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.step == "original":
        original(args.folder, args.hpsv2_src)
    else:
        {"make": make, "ours": ours}[args.step](args.folder)


if __name__ == "__main__":
    main()
