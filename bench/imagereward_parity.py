"""ImageReward parity: the project's transformers-5 port against the original implementation.

Three steps, two environments (the original needs transformers < 5, timm 0.6.13, fairscale):

    # 1. project environment: the tiny checkpoint in the ORIGINAL layout, its tokenizer, the images
    PYTHONPATH=. python bench/imagereward_parity.py make /tmp/ir-parity
    # 2. an environment of its own: the original code scores them
    python3.11 -m venv /tmp/ir-venv && . /tmp/ir-venv/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 transformers==4.46.3 timm==0.6.13 "huggingface_hub<1" ftfy
    # (torchvision 0.28.0's wheel does not load against torch 2.13.0+cpu: "operator torchvision::nms
    # does not exist"; timm 0.6.13 and the package's transforms import torchvision)
    pip install --no-build-isolation fairscale==0.4.13 && pip install --no-deps image-reward==1.5
    python bench/imagereward_parity.py original /tmp/ir-parity
    # 3. project environment: the port scores them and the two are compared
    PYTHONPATH=. python bench/imagereward_parity.py ours /tmp/ir-parity

Step 2 imports the installed ``ImageReward`` package's own modules (its ``ImageReward`` class,
BLIP_Pretrain, med.py BERT, timm ViT) without its ``__init__`` (which imports the ``clip`` package
for other scores), builds the model at the tiny size (the package hard-codes ViT-L and an MLP of
input 768: ``create_vit`` and the MLP's input are given the tiny sizes, nothing else is changed),
loads ImageReward.pt with ``strict=True`` and scores with ``ImageReward.score(prompt, image)``.
The tokenizer the original fetches from the Hub (bert-base-uncased) is the tiny one in the folder.
Step 3 writes ``bench/results/imagereward_parity.json``: both score lists, the largest difference,
the package versions of both environments.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import types
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "imagereward_parity.json"
TOLERANCE = 1e-5


def _versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def make(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.dpdmd import tiny_reference_models as tiny

    paths = tiny.save_tiny_imagereward(folder)
    for i, image in enumerate(tiny.parity_images()):
        image.save(folder / f"image{i}.png")
    (folder / "prompts.json").write_text(json.dumps(tiny.PARITY_PROMPTS))
    print(json.dumps(paths))


def _pairs(folder: Path):
    from PIL import Image

    prompts = json.loads((folder / "prompts.json").read_text())
    images = [Image.open(path).convert("RGB") for path in sorted(folder.glob("image*.png"))]
    return [(prompts[i % len(prompts)], image) for i, image in enumerate(images)]


def original(folder: Path) -> None:
    import importlib.util

    import torch

    # the package's modules, without ImageReward/__init__.py (it imports openai's `clip` for CLIPScore)
    spec = importlib.util.find_spec("ImageReward")
    package_dir = Path(spec.submodule_search_locations[0])
    for name, path in (("ImageReward", package_dir), ("ImageReward.models", package_dir / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    from ImageReward import ImageReward as ir_module
    from ImageReward.models.BLIP import blip, blip_pretrain, vit

    sys.path.insert(0, str(ROOT))
    from tests.dpdmd.tiny_reference_models import IR_TEXT, IR_VISION

    tokenizer_dir = str(folder / "bert-tokenizer")
    original_from_pretrained = blip.BertTokenizer.from_pretrained.__func__

    def local_bert(cls, name, *args, **kwargs):  # the Hub's bert-base-uncased -> the tiny local tokenizer
        return original_from_pretrained(cls, tokenizer_dir if name == "bert-base-uncased" else name, *args, **kwargs)

    blip.BertTokenizer.from_pretrained = classmethod(local_bert)

    def tiny_vit(kind, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        v = IR_VISION
        encoder = vit.VisionTransformer(img_size=image_size, patch_size=v["patch"], embed_dim=v["width"],
                                        depth=v["depth"], num_heads=v["width"] // 64, mlp_ratio=v["mlp"] / v["width"],
                                        use_grad_checkpointing=use_grad_checkpointing, ckpt_layer=ckpt_layer,
                                        drop_path_rate=drop_path_rate)
        return encoder, v["width"]

    blip_pretrain.create_vit = tiny_vit
    model = ir_module.ImageReward(med_config=str(folder / "ImageReward" / "med_config.json"), device="cpu")
    model.mlp = ir_module.MLP(IR_TEXT["hidden_size"])  # the package's MLP at the tiny text width
    state = torch.load(folder / "ImageReward" / "ImageReward.pt", map_location="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    scores, token_ids = [], []
    with torch.no_grad():
        for prompt, image in _pairs(folder):
            scores.append(model.score(prompt, image))
            token_ids.append(model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35)["input_ids"])
    out = {"scores": scores, "token_ids": token_ids,
           "versions": _versions("torch", "torchvision", "transformers", "timm", "fairscale", "image-reward", "numpy", "pillow")}
    (folder / "original.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def ours(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from dpdmd.evaluation.imagereward import MAX_PROMPT_TOKENS, load_imagereward
    from tests.dpdmd.tiny_reference_models import state_digest

    reference = json.loads((folder / "original.json").read_text())
    model = load_imagereward(str(folder / "ImageReward"), str(folder / "bert-tokenizer"))
    pairs = _pairs(folder)
    scores = model.score_pairs([image for _, image in pairs], [prompt for prompt, _ in pairs]).tolist()
    token_ids = [model.tokenizer(p, padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS)["input_ids"]
                 for p, _ in pairs]
    diff = max(abs(a - b) for a, b in zip(scores, reference["scores"]))
    state = torch.load(folder / "ImageReward" / "ImageReward.pt", map_location="cpu", weights_only=True)
    result = {
        "what": "ImageReward score of 6 (prompt, image) pairs, tiny random checkpoint in the original layout",
        "commands": [
            "PYTHONPATH=. python bench/imagereward_parity.py make /tmp/ir-parity",
            "/tmp/ir-venv/bin/python bench/imagereward_parity.py original /tmp/ir-parity",
            "PYTHONPATH=. python bench/imagereward_parity.py ours /tmp/ir-parity",
        ],
        "checkpoint_digest": state_digest(state),
        "original": reference["scores"], "ours": scores, "max_abs_difference": diff, "tolerance": TOLERANCE,
        "token_ids_equal": token_ids == reference["token_ids"],
        "original_environment": reference["versions"],
        "project_environment": _versions("torch", "transformers", "numpy", "pillow"),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if diff > TOLERANCE or not result["token_ids_equal"]:
        raise SystemExit(f"parity FAILED: max |difference| {diff:.3g} > {TOLERANCE} or token ids differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("make", "original", "ours"))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    {"make": make, "original": original, "ours": ours}[args.step](args.folder)


if __name__ == "__main__":
    main()
