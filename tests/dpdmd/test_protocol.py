"""The final evaluation protocol (dpdmd.evaluation.final_protocol, eval_protocols/reference.yaml, the CLI).

The shipped protocol is loaded and run on a tree of tiny random models laid out as its
``${DPDMD_WEIGHTS}`` folders (tiny_encoders.py, tiny_reference_models.py); the generators are the
teacher stand-in of stand_in_samples.py and corrupted copies of it. MANIQA needs the iqa extra
(pyiqa, torchvision): where it is missing the run drops it, and the path check says why.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from dpdmd import ConfigError
from dpdmd.evaluation.corruptions import gaussian_noise
from dpdmd.evaluation.final_protocol import (combine_chunks, load_protocol, make_protocol_evaluator, protocol_problems,
                                    run_protocol, write_table)

from . import stand_in_samples, tiny_encoders
from . import tiny_reference_models as tiny

PROMPTS = stand_in_samples.PROMPTS
HAS_IQA = importlib.util.find_spec("pyiqa") is not None and importlib.util.find_spec("torchvision") is not None


def generator(corrupt=None, calls=None):
    """(prompts, seeds) -> the stand-in teacher's images of those prompts (optionally corrupted)."""
    def sample(prompts, seeds):
        if calls is not None:
            calls.append(list(prompts))
        grid = stand_in_samples.shape_grid(seeds)  # corrupted whole: a prompt's images do not depend on the chunk
        return (corrupt(grid) if corrupt else grid)[[PROMPTS.index(p) for p in prompts]]
    return sample


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory):
    """Tiny models under the folder names of eval_protocols/reference.yaml."""
    root = tmp_path_factory.mktemp("dpdmd-weights")
    dinov3 = tiny_encoders.save_tiny_dinov3(root / "dinov3-vitl16-pretrain-lvd1689m")
    (dinov3 / "preprocessor_config.json").write_text(json.dumps({  # DINOv3's processor, at 32 px
        "image_processor_type": "DINOv3ViTImageProcessorFast", "size": {"height": 32, "width": 32}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    tiny_encoders.save_tiny_clip(root / "clip-vit-large-patch14")
    ir = tiny.save_tiny_imagereward(root / "ir")
    (root / "ir" / "ImageReward").rename(root / "ImageReward")
    (root / "ir" / "bert-tokenizer").rename(root / "bert-base-uncased")
    hps = tiny.save_tiny_hps(root / "HPSv2")
    (root / "HPSv2" / "clip-h").rename(root / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    from transformers import CLIPConfig, CLIPModel  # PickScore_v1 is a CLIP-H: the CLIP-H folder's architecture

    torch.manual_seed(1)
    CLIPModel(CLIPConfig.from_pretrained(root / "CLIP-ViT-H-14-laion2B-s32B-b79K")).save_pretrained(root / "PickScore_v1")
    tiny.save_tiny_visualquality_r1(root / "VisualQuality-R1-7B")
    assert ir and hps
    return root


@pytest.fixture
def reference(weights_root, monkeypatch):
    """The shipped protocol on the tiny tree: 3 seeds, 2 prompts per chunk, precision_k 1."""
    monkeypatch.setenv("DPDMD_WEIGHTS", str(weights_root))
    protocol = load_protocol("reference")
    options = dict(protocol.evaluator_options, precision_k=1, dtype="float32", batch_size=6)
    if not HAS_IQA:
        options["quality_models"] = {k: v for k, v in options["quality_models"].items() if k != "maniqa"}
    # hpsv21 as fidelity's preference factor: the tiny random PickScore's cosines are negative on
    # these images, and the product orders sets only for a positive score (real PickScore: ~0.8)
    return replace(protocol, seeds_per_prompt=3, prompts_per_chunk=2, evaluator_options=options,
                   quality_metric="hpsv21")


def test_the_shipped_protocol_is_the_references(monkeypatch):
    monkeypatch.delenv("DPDMD_WEIGHTS", raising=False)
    protocol = load_protocol("reference")
    assert protocol.name == "reference" and protocol.seeds_per_prompt == 16 and protocol.prompts_file is None
    options = protocol.evaluator_options
    assert list(options["diversity_encoders"]) == ["dinov3", "clip"]
    assert set(options["quality_models"]) == {"imagereward", "pickscore", "hpsv21", "visualquality_r1", "maniqa"}
    problems = protocol_problems(protocol)
    assert problems and all("${DPDMD_WEIGHTS}" in p or "DPDMD_WEIGHTS" in p or "pyiqa" in p for p in problems), problems


def test_missing_weights_are_named_with_their_hub_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("DPDMD_WEIGHTS", str(tmp_path))
    text = "\n".join(protocol_problems(load_protocol("reference")))
    for hub in ("facebook/dinov3-vitl16-pretrain-lvd1689m", "openai/clip-vit-large-patch14", "THUDM/ImageReward",
                "google-bert/bert-base-uncased", "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                "xswu/HPSv2", "TianheWu/VisualQuality-R1-7B", "chaofengc/IQA-PyTorch-Weights"):
        assert hub in text, (hub, text)


def test_unknown_protocol_keys_and_files_are_refused(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("seeds: 16\nseeds_per_prompt: 0\n")
    with pytest.raises(ConfigError, match="unknown key 'seeds'.*\n.*seeds_per_prompt must be a positive integer"):
        load_protocol(bad)
    with pytest.raises(ConfigError, match="does not exist; give a YAML file or one of reference"):
        load_protocol("nonesuch")


def test_paths_are_checked_before_any_image_is_generated(reference, tmp_path):
    calls = []
    broken = replace(reference, prompts_file=str(tmp_path / "prompts.txt"))
    with pytest.raises(ConfigError, match="prompts_file: .* is not a file"):
        run_protocol(broken, prompts=PROMPTS, teachers={"stand-in": generator(calls=calls)}, students=[])
    options = dict(reference.evaluator_options, quality_models={"hpsv21": {
        "model": str(tmp_path / "HPS_v2.1_compressed.pt"), "processor": str(tmp_path)}})
    with pytest.raises(ConfigError, match="hpsv21.model: .* download HPS_v2.1_compressed.pt from xswu/HPSv2"):
        run_protocol(replace(reference, evaluator_options=options, quality_metric="hpsv21"), prompts=PROMPTS,
                     teachers={"stand-in": generator(calls=calls)}, students=[])
    assert calls == []


@pytest.fixture
def table(reference):
    torch.set_num_threads(1)
    evaluator = make_protocol_evaluator(reference, device="cpu")
    evaluator.scorers["visualquality_r1"].max_new_tokens = 8
    students = [("same as teacher", "stand-in", generator()),
                ("noisy", "stand-in", generator(lambda x: gaussian_noise(x, 0.2)))]
    return run_protocol(reference, prompts=PROMPTS, teachers={"stand-in": generator()}, students=students,
                        evaluator=evaluator)


def test_the_table_has_the_teacher_beside_the_students(table):
    assert list(table["name"]) == ["teacher (stand-in)", "same as teacher", "noisy"]
    assert list(table["role"]) == ["teacher", "student", "student"]
    for column in ("diversity_dinov3", "diversity_clip", "imagereward", "pickscore", "hpsv21", "visualquality_r1",
                   "visualquality_r1_unparsable", "teacher_precision", "spectral", "fidelity",
                   *(["maniqa"] if HAS_IQA else [])):
        assert column in table.columns, column
    teacher, same, noisy = (table.iloc[i] for i in range(3))
    for column in table.columns[3:]:  # a student identical to the teacher scores as the teacher
        assert same[column] == pytest.approx(teacher[column], nan_ok=True), column
    assert noisy["spectral"] < 1.0 and noisy["fidelity"] < teacher["fidelity"]
    assert 0 <= teacher["visualquality_r1_unparsable"] <= len(PROMPTS) * 3


def test_chunks_combine_to_the_whole_sets_metrics(reference):
    single = replace(reference, prompts_per_chunk=len(PROMPTS), evaluator_options=dict(
        reference.evaluator_options, quality_models={k: v for k, v in reference.evaluator_options["quality_models"].items()
                                                     if k in ("pickscore", "hpsv21", "imagereward")}))
    evaluator = make_protocol_evaluator(single, device="cpu")
    kwargs = dict(prompts=PROMPTS, teachers={"t": generator()}, evaluator=evaluator,
                  students=[("noisy", "t", generator(lambda x: gaussian_noise(x, 0.1)))])
    whole = run_protocol(single, **kwargs)
    chunked = run_protocol(replace(single, prompts_per_chunk=3), **kwargs)  # chunks of 3 and 1 prompts
    pd.testing.assert_frame_equal(whole, chunked, rtol=1e-5, atol=1e-7)  # float32 batches of other sizes


def test_combine_chunks_weights_unscored_images_out():
    chunks = [(2, {"diversity": 0.5, "vq": 4.0, "vq_unparsable": 2.0, "p": 1.0, "teacher_precision": 1.0, "spectral": 1.0}),
              (1, {"diversity": 0.2, "vq": math.nan, "vq_unparsable": 3.0, "p": 4.0, "teacher_precision": 0.5,
                   "spectral": 1.0})]
    out = combine_chunks(chunks, seeds=3, preference_key="p")
    assert out["diversity"] == pytest.approx(0.4) and out["p"] == pytest.approx(2.0)
    assert out["vq"] == 4.0 and out["vq_unparsable"] == 5.0  # 4 scored images, all in the first chunk
    assert out["fidelity"] == out["quality"] == pytest.approx(2.0 * (2.5 / 3))


def test_tables_are_written_as_parquet_and_markdown(table, tmp_path):
    parquet, md = write_table(table, tmp_path, name="protocol-reference")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), table)
    lines = md.read_text().splitlines()
    assert lines[0] == "# Evaluation protocol `protocol-reference`"
    assert lines[2].startswith("| name | group | role | ") and len(lines) == 4 + len(table)


class _StandInStudent:
    """What the CLI needs of dpdmd.student.Student (config.backbone, sample, teacher_sample; and
    drop_teacher, which the CLI calls when it has one)."""

    def __init__(self, path, corrupt=None):
        self.config = type("Config", (), {"backbone": "stand-in"})()
        self.path, self.sample, self.teacher_sample = path, generator(corrupt), generator()
        self.dropped = 0

    def drop_teacher(self):
        self.dropped += 1


def test_cli_scores_every_student_on_a_searchs_fronts(reference, tmp_path, monkeypatch):
    from dpdmd.evaluate import main

    search = tmp_path / "search"
    for trial in ("t1", "t2"):
        (search / trial / "checkpoint_000003").mkdir(parents=True)
    (search / "summary.json").write_text(json.dumps({"fronts": {"stand-in": [
        {"trial_id": "t1", "checkpoint": "t1/checkpoint_000003"},
        {"trial_id": "t2", "checkpoint": str(search / "t2" / "checkpoint_000003")}]}}))
    protocol_file = tmp_path / "tiny.yaml"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS[:2]) + "\n\n")
    options = dict(reference.evaluator_options, quality_models={
        "hpsv21": reference.evaluator_options["quality_models"]["hpsv21"]})
    protocol_file.write_text(json.dumps({**reference.to_dict(), "name": "tiny", "evaluator_options": options,
                                         "prompts_file": str(prompts_file)}))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    loaded, made = [], []

    def load(path, device):
        loaded.append(path.name)
        made.append(_StandInStudent(path, (lambda x: gaussian_noise(x, 0.2)) if "t2" in str(path) else None))
        return made[-1]

    from dpdmd.cli import evaluate_protocol

    assert evaluate_protocol.main(["--protocol", str(protocol_file), str(search), "--check"], load_student=load) == 0
    assert loaded == []  # --check loads nothing
    assert evaluate_protocol.main(["--protocol", str(protocol_file), str(search), "--out", str(tmp_path / "out")],
                             load_student=load) == 0
    table = pd.read_parquet(tmp_path / "out" / "protocol-tiny.parquet")
    assert list(table["name"]) == ["teacher (stand-in)", "stand-in/t1", "stand-in/t2"]
    assert made[0].dropped == 1  # the teacher's student frees its teacher once the teacher's row is done
    assert table["fidelity"].iloc[2] < table["fidelity"].iloc[1] == pytest.approx(table["fidelity"].iloc[0])
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].glob("files/media/table/protocol/tiny_*.table.json"))
    assert tables and len(json.loads(tables[0].read_text())["data"]) == 3
    # a missing student is refused before anything loads, through dpdmd.evaluate's own entry
    assert main(["--protocol", str(protocol_file), str(tmp_path / "nowhere")]) == 2
    remote = tmp_path / "remote-search"
    remote.mkdir()
    (remote / "summary.json").write_text(json.dumps({"fronts": {"sd35m": [
        {"trial_id": "a", "checkpoint": "s3://bucket/a/checkpoint_000001"}, {"trial_id": "b", "checkpoint": None}]}}))
    with pytest.raises(ConfigError, match="(?s)sd35m/a's checkpoint s3://.*python -m tune.export .*sd35m/b kept no"):
        evaluate_protocol.resolve_students([remote])


def test_cli_scores_a_saved_digits_student_against_its_teacher(reference, tmp_path, monkeypatch):
    """End to end through dpdmd.student: a digits-flow student saved as a run saves it, its
    teacher's row beside it, the students' own evaluation prompts (prompts_file: null)."""
    from dpdmd.config import TrainConfig
    from dpdmd.evaluate import main
    from dpdmd.student import save_student
    from dpdmd.training.build import build_backbone, build_method

    config = TrainConfig(backbone="digits-flow", teacher_steps=6, anchor_k=2, device="cpu")
    backbone = build_backbone(config)
    torch.manual_seed(0)
    method = build_method(config, backbone)
    save_student(tmp_path / "run" / "student", backbone=backbone, network=method.student, config=config)
    options = dict(reference.evaluator_options, quality_models={
        "hpsv21": reference.evaluator_options["quality_models"]["hpsv21"]})
    protocol_file = tmp_path / "digits.yaml"
    protocol_file.write_text(json.dumps({**reference.to_dict(), "name": "digits", "evaluator_options": options,
                                         "prompts_per_chunk": 5}))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    loads, load_teacher = [], type(backbone).load_teacher
    monkeypatch.setattr(type(backbone), "load_teacher", lambda self: loads.append(1) or load_teacher(self))
    assert main(["--protocol", str(protocol_file), str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    assert len(loads) == 1  # the teacher is loaded once (Student.teacher), not once per chunk of prompts
    table = pd.read_parquet(tmp_path / "out" / "protocol-digits.parquet")
    assert list(table["name"]) == ["teacher (digits-flow)", "run"]
    assert table["diversity_dinov3"].between(0, 2).all() and table["hpsv21"].notna().all()
    assert table["spectral"].iloc[0] == 1.0  # the teacher against its own samples
