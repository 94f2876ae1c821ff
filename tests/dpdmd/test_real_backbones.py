"""The diffusers backbones (sd35m = SD3 flow, sdxl = eps) on tiny random-weight pipelines
(tests/dpdmd/tiny_pipelines.py), loaded through `get_backbone(name, path=DIR)` as users load real
weights: DP-DMD updates in full and LoRA mode, the stop-gradient, anchors, decoding, agreement with
the diffusers pipelines' own samplers, text encoders run once per prompt, and the errors that
missing or incomplete weights give."""

from __future__ import annotations

import collections
import json
import importlib.util
import shutil

import pytest
import torch

from dpdmd.anchors import LocalAnchors, teacher_anchors
from dpdmd.backbones import backbone_options, get_backbone
from dpdmd.backbones.registry_real import check_weights_dir
from dpdmd.config import ConfigError, EvalConfig, TrainConfig
from dpdmd.evaluation import teacher_sampler
from dpdmd.method import DPDMD
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.stream import iteration_batch

from .helpers import step_output_grads
from .tiny_pipelines import make_tiny_sd3, make_tiny_sdxl

NAMES = ["sd35m", "sdxl"]
PROMPTS = ["a cat", "a red car"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd35m": str(make_tiny_sd3(root / "sd3")), "sdxl": str(make_tiny_sdxl(root / "sdxl"))}


def make(dirs, name, **options):
    defaults = {"resolution": 32, "weights_dtype": "fp32", "teacher_steps": 6, "lora_rank": 4}
    if name != "sdxl":
        defaults["max_sequence_length"] = 16  # T5 tokens; keeps the tiny transformer's sequence short
    return get_backbone(name, path=dirs[name], **{**defaults, **options})


def make_method(backbone, **options):
    torch.manual_seed(0)
    return DPDMD(backbone, **{"lambda_div": 0.05, "lr_student": 1e-3, "lr_fake": 1e-3, **options})


def batch_for(backbone, iteration=0):
    return iteration_batch(seed=0, iteration=iteration, prompts=PROMPTS, batch_size=2,
                           latent_shape=backbone.latent_shape, num_dmd_levels=len(backbone.schedule.dmd_levels))


def snapshot(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def changed(before, net):
    return {n for n, p in net.named_parameters() if not torch.equal(before[n], p.detach())}


# --- loading ---------------------------------------------------------------------------------
def test_registry_names_and_options():
    for name in ("sd35m", "sd35l", "sd3m", "sdxl"):
        options = backbone_options(name)
        assert {"path", "resolution", "weights_dtype", "train_mode", "lora_rank", "lora_alpha",
                "lora_target_modules", "gradient_checkpointing"} <= set(options)
        assert "variant" not in options  # fixed by the name


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_the_folders_schedule_and_shapes(dirs, name):
    b = make(dirs, name, cfg_scale=None)
    if name == "sd35m":
        assert b.schedule.kind == "flow" and b.schedule.shift == 3.0  # from scheduler_config.json
        assert b.latent_shape == (16, 16, 16) and b.cfg_scale == 3.5
    else:
        assert b.schedule.kind == "eps" and b.schedule.student_levels == [999, 749, 499, 249, -1]
        assert b.latent_shape == (4, 16, 16) and b.cfg_scale == 5.0
    assert b.identity.startswith(str(check_weights_dir(dirs[name], name)))
    with pytest.raises(ValueError, match="multiple of"):
        make(dirs, name, resolution=33)


def test_bad_options_are_refused(dirs):
    with pytest.raises(ValueError, match="train_mode 'qlora'"):
        make(dirs, "sd35m", train_mode="qlora")
    with pytest.raises(ValueError, match="weights_dtype"):
        make(dirs, "sdxl", weights_dtype="int8")
    with pytest.raises(ValueError, match="does not take"):
        get_backbone("sdxl", path=dirs["sdxl"], max_sequence_length=16)  # an SD3 option
    with pytest.raises(ValueError, match="lora_target_modules"):
        DPDMD(make(dirs, "sdxl", train_mode="lora", lora_target_modules=["no_such_layer"]),
              lambda_div=0.05, lr_student=1e-3, lr_fake=1e-3)


# --- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("name", NAMES)
def test_dpdmd_updates(dirs, name, mode):
    b = make(dirs, name, train_mode=mode)
    m = make_method(b)
    teacher0, student0, fake0 = snapshot(m.teacher), snapshot(m.student), snapshot(m.fake)
    anchors = LocalAnchors(b, m.teacher, anchor_k=5)
    for i in range(4):  # fake, fake, fake, student
        batch = batch_for(b, i)
        cond = b.encode_prompts(batch.prompts)
        if i < 3:
            out = m.fake_update(batch, cond)
        else:
            uncond = b.unconditional(2)
            out = m.student_update(batch, cond, uncond, anchors(batch, cond, uncond))
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert not changed(teacher0, m.teacher)
    assert changed(student0, m.student) and changed(fake0, m.fake)
    if mode == "full":
        assert all(p.dtype == torch.float32 and p.requires_grad for p in m.student.parameters())
        return
    # LoRA: only adapter weights train and change; the base weights stay the teacher's.
    teacher = dict(m.teacher.named_parameters())
    for net, before in ((m.student, student0), (m.fake, fake0)):
        assert all(("lora_" in n) == p.requires_grad for n, p in net.named_parameters())
        assert all("lora_" in n for n in changed(before, net))
        base = {n: p for n, p in net.named_parameters() if "lora_" not in n}
        assert len(base) == len(teacher)
        for n, p in base.items():
            assert torch.equal(p, teacher[n.removeprefix("base_model.model.").replace(".base_layer", "")])
    assert m.state_dict()["student"] and all("lora_" in n for n in m.state_dict()["student"])


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_bf16_teacher_with_fp32_trainable_weights_under_autocast(dirs, mode):
    b = make(dirs, "sd35m", weights_dtype="bf16", train_mode=mode)
    m = make_method(b, mixed_precision="bf16")
    assert all(p.dtype == torch.bfloat16 for p in m.teacher.parameters())
    trainable = [p for p in m.student.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # fp32 master weights
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    assert cond["encoder_hidden_states"].dtype == torch.bfloat16
    m.fake_update(batch, cond)
    out = m.student_update(batch, cond, uncond, LocalAnchors(b, m.teacher, 5)(batch, cond, uncond))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())


@pytest.mark.parametrize("name", NAMES)
def test_gradient_checkpointing_gives_the_same_update(dirs, name):
    results = []
    for checkpointing in (False, True):
        b = make(dirs, name, train_mode="lora", gradient_checkpointing=checkpointing)
        m = make_method(b)
        assert m.student.get_base_model().is_gradient_checkpointing == checkpointing
        batch = batch_for(b)
        cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
        results.append(m.student_update(batch, cond, uncond, LocalAnchors(b, m.teacher, 5)(batch, cond, uncond)))
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_lora_student_saves_an_adapter_that_peft_reloads(dirs, tmp_path):
    """`save_pretrained` of a LoRA student (what the trainer calls) writes the adapter alone, which
    ``PeftModel.from_pretrained(transformer, dir)`` puts back on the teacher (DMDR's format)."""
    from peft import PeftModel

    b = make(dirs, "sd35m", train_mode="lora")
    m = make_method(b)
    batch = batch_for(b)
    cond = b.encode_prompts(batch.prompts)
    for _ in range(2):
        m.fake_update(batch, cond)
        m.student_update(batch, cond, b.unconditional(2), None)
    m.student.save_pretrained(tmp_path / "student")
    assert (tmp_path / "student" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(b.load_teacher(), tmp_path / "student").eval()
    with torch.no_grad():
        level = b.schedule.student_levels[1]
        assert torch.allclose(b.predict(reloaded, batch.x1, level, cond), b.predict(m.student, batch.x1, level, cond),
                              atol=1e-5)


def _step_output_grads(method):
    return step_output_grads(method, batch_for(method.backbone))


@pytest.mark.parametrize("name", NAMES)
def test_stop_gradient_keeps_dmd_off_the_first_step(dirs, name):
    b = make(dirs, name, train_mode="lora")
    assert _step_output_grads(make_method(b, stop_grad=True)) == [False, True, True, True]
    assert _step_output_grads(make_method(b, stop_grad=False)) == [True, True, True, True]


@pytest.mark.parametrize("name", NAMES)
def test_anchor_k5_and_decode(dirs, name):
    b = make(dirs, name)
    m = make_method(b)
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    targets = teacher_anchors(b, m.teacher, batch.x1, cond, uncond, [2, 5])
    assert targets[5].shape == batch.x1.shape and torch.isfinite(targets[5]).all()
    assert torch.equal(targets[5], teacher_anchors(b, m.teacher, batch.x1, cond, uncond, [5])[5])
    images = b.decode(m.sample(batch.x1, cond))
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


# --- agreement with diffusers' own pipelines ---------------------------------------------------
def test_sd3_teacher_sampler_matches_the_diffusers_pipeline(dirs):
    """The teacher's CFG Euler sampler equals StableDiffusion3Pipeline on the same noise: same
    sigma grid, timestep 1000 s, prompt embeddings, empty-prompt CFG branch."""
    from diffusers import StableDiffusion3Pipeline

    b = make(dirs, "sd35m", cfg_scale=4.0)
    teacher = b.build_networks()[0]
    x1 = torch.randn(1, *b.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = teacher_sampler(b, teacher)(x1, b.encode_prompts(["a cat"]))
    pipe = StableDiffusion3Pipeline.from_pretrained(dirs["sd35m"])
    theirs = pipe("a cat", height=32, width=32, num_inference_steps=6, guidance_scale=4.0, latents=x1.clone(),
                  max_sequence_length=16, output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_sdxl_teacher_sampler_matches_the_diffusers_pipeline_with_ddim(dirs):
    """The eps teacher (DDIM, trailing grid, CFG with the zeroed empty prompt, size ids) equals
    StableDiffusionXLPipeline run with the equivalent DDIM scheduler."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    b = make(dirs, "sdxl", cfg_scale=4.0, teacher_steps=5)
    teacher = b.build_networks()[0]
    x1 = torch.randn(1, *b.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = teacher_sampler(b, teacher)(x1, b.encode_prompts(["a cat"]))
    pipe = StableDiffusionXLPipeline.from_pretrained(dirs["sdxl"])
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", clip_sample=False,
                                               set_alpha_to_one=True, steps_offset=0)
    theirs = pipe("a cat", height=32, width=32, num_inference_steps=5, guidance_scale=4.0, latents=x1.clone(),
                  output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    assert torch.count_nonzero(b.encode_prompts([""])["encoder_hidden_states"]) == 0  # force_zeros_for_empty_prompt


# --- prompts: encoded once --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_text_encoders_run_once_per_distinct_prompt(dirs, name, monkeypatch, tmp_path):
    monkeypatch.setenv("DPDMD_CACHE", str(tmp_path))  # an empty disk cache
    b = make(dirs, name)
    seen = collections.Counter()
    pipeline_class = b.pipeline_class()
    original = pipeline_class.encode_prompt

    def counting(self, prompt, *args, **kwargs):
        seen.update([prompt] if isinstance(prompt, str) else prompt)
        return original(self, prompt, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "encode_prompt", counting)
    cache = PromptEmbeddingCache(b)
    prompts = ["a cat", "a dog", "a red car", "a cat", "a dog"]
    first = None
    for i in range(12):
        emb = cache([prompts[(i + j) % len(prompts)] for j in range(3)])
        cache([""] * 2)
        b.unconditional(4)
        first = first if first is not None else cache(["a cat"])
    assert seen == {"a cat": 1, "a dog": 1, "a red car": 1, "": 1}
    assert cache.encoded == 4 and b.text_encoder_loads == 1
    assert all(v.shape[0] == 3 for v in emb.values())

    # a new backbone (another trial) reads the disk cache and never loads the text encoders
    fresh = make(dirs, name)
    again = fresh.encode_prompts(["a cat"])
    assert fresh.text_encoder_loads == 0 and sum(seen.values()) == 4
    assert all(torch.equal(again[k], first[k]) for k in first)

    # encode what is new, then free the encoders (as the trainer does); a prompt seen later reloads them
    b.encode_prompts(["a cat", "a horse", ""])
    b.release_text_encoders()
    assert b._text_pipe is None and seen["a horse"] == 1 and seen["a cat"] == 1
    b.encode_prompts(["a horse", "a dog"])
    assert b.text_encoder_loads == 1
    with pytest.warns(UserWarning, match="before release_text_encoders"):
        b.encode_prompts(["a boat"])
    assert b.text_encoder_loads == 2


# --- missing or incomplete weights -------------------------------------------------------------
def test_missing_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-weights"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        get_backbone("sd35m", path=str(missing))
    assert str(missing) in str(err.value) and "quickstart.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="backbone: .*does not exist"):
        from dpdmd.training.build import build_backbone

        build_backbone(TrainConfig(backbone="sdxl", backbone_options={"path": str(missing)}, device="cpu"))


def test_hub_ids_resolve_through_the_hugging_face_cache_offline(dirs, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE") as err:
        check_weights_dir("stabilityai/stable-diffusion-3.5-medium", "sd35m")
    assert "quickstart.yaml" in str(err.value)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        get_backbone("sd35m")  # no path: the name's hub id
    # a repo in the cache (the layout `huggingface-cli download` leaves) loads by its id, offline
    repo = tmp_path / "models--someone--tiny-sd3"
    shutil.copytree(dirs["sd35m"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert check_weights_dir("someone/tiny-sd3", "sd35m") == repo / "snapshots" / "abc123"
    b = make({"sd35m": "someone/tiny-sd3"}, "sd35m")
    assert b.identity.startswith(str(repo / "snapshots" / "abc123"))
    images = b.decode(make_method(b).sample(batch_for(b).x1, b.encode_prompts(PROMPTS)))
    assert images.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_incomplete_directory_names_what_is_missing(dirs, name, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dirs[name], broken)
    shutil.rmtree(broken / "vae")
    (broken / "text_encoder_2" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        get_backbone(name, path=str(broken), resolution=32)
    message = str(err.value)
    assert str(broken) in message and "vae/ (the VAE)" in message and "text_encoder_2/ weights" in message
    assert "quickstart.yaml" in message
    (broken / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        check_weights_dir(broken, name)


def test_weights_of_the_other_pipeline_are_refused(dirs):
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline.*needs a StableDiffusion3Pipeline"):
        check_weights_dir(dirs["sdxl"], "sd35m")
    assert check_weights_dir(dirs["sdxl"], "sdxl").is_dir()


# --- end to end ----------------------------------------------------------------------------------
def test_train_end_to_end_sd35m(dirs, tmp_path):
    if importlib.util.find_spec("tests.dpdmd.tiny_encoders") is None:
        pytest.skip("the real evaluator's tiny encoders (tests/dpdmd/tiny_encoders.py) are not there yet")
    metrics_module = pytest.importorskip("dpdmd.evaluation")
    if not hasattr(metrics_module, "make_real_evaluator"):
        pytest.skip("dpdmd.evaluation.make_real_evaluator is not there yet")
    from dpdmd.training.loop import train

    from . import tiny_encoders

    clip = str(tiny_encoders.save_tiny_clip(tmp_path / "clip"))
    evaluator_options = {"diversity_encoders": {"dinov2": str(tiny_encoders.save_tiny_dinov2(tmp_path / "dino"))},
                         "quality_models": {"clip_score": clip}, "precision_k": 1}
    config = TrainConfig(
        backbone="sd35m", backbone_options={"path": dirs["sd35m"], "resolution": 32, "weights_dtype": "fp32",
                                            "max_sequence_length": 16},
        iterations=12, fake_updates=5, batch_size=2, teacher_steps=6, anchor_k=2, device="cpu",
        prompts=PROMPTS,
        eval=EvalConfig(prompts=["a cat"], seeds_per_prompt=3, evaluator="real", every=0,
                        evaluator_options=evaluator_options))
    metrics = train(config, out_dir=tmp_path / "run", progress=False)
    assert metrics["iteration"] == 12 and metrics["student_updates"] == 2
    assert 0 <= metrics["diversity"] <= 2 and "quality" in metrics
    # quality is read against the teacher's own samples, whose features are cached with its scores
    teacher = json.loads((tmp_path / "run" / "teacher_metrics.json").read_text())
    for scores in (metrics, teacher):
        assert scores["quality"] == pytest.approx(scores["clip_score"] * scores["teacher_precision"])
    from dpdmd.evaluation import make_evaluator, teacher_reference
    from dpdmd.training.build import build_backbone

    backbone = build_backbone(config)
    fresh = make_evaluator(config.eval, backbone)  # a second trial: the cached reference, no teacher run
    assert teacher_reference(config, backbone, None, None, fresh)[0] == teacher
    assert fresh._reference["features"].shape == (1, 3, 32)  # one prompt, 3 seeds, tiny DINOv2 width
    assert (tmp_path / "run" / "samples" / "student_latest.png").exists()
    assert (tmp_path / "run" / "student" / "transformer" / "config.json").exists()  # full mode: the whole transformer
