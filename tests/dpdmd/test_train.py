"""train(): determinism, the shared iteration stream, resume, outputs and bad input."""

import csv
import subprocess
import sys

import pytest
import torch

from dpdmd import ConfigError, EvalConfig, TrainConfig, train
from dpdmd.anchors import InMemoryAnchorCache, shared_anchors
from dpdmd.training.checkpoints import CHECKPOINT

from .helpers import register_random_backbones

register_random_backbones()

FAST_EVAL = EvalConfig(prompts=["3", "7"], seeds_per_prompt=4, every=1)


def fast_config(**changes):
    base = dict(backbone="test-random-flow", iterations=20, batch_size=2, teacher_steps=10, anchor_k=3,
                fake_updates=5, eval=FAST_EVAL, device="cpu")
    return TrainConfig(**{**base, **changes})


def run(config, **kwargs):
    reports = []
    train(config, report=lambda m, c: reports.append(m), progress=False, **kwargs)
    return reports


LOSSES = ("loss_dmd", "loss_div", "loss_fake", "grad_norm_student", "grad_norm_fake", "diversity", "quality")


@pytest.mark.parametrize("backbone", ["test-random-flow", "test-random-eps"])
def test_same_seed_same_losses_over_20_iterations(backbone):
    a, b = run(fast_config(backbone=backbone)), run(fast_config(backbone=backbone))
    assert len(a) == 3  # 20 iterations, a student update every 6th: 3 evaluations
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in LOSSES} == {k: rb[k] for k in LOSSES}
    c = run(fast_config(backbone=backbone, seed=1))
    assert [r["loss_dmd"] for r in c] != [r["loss_dmd"] for r in a]


def test_iteration_stream_is_identical_across_k_and_lambda():
    seen = {}

    def recording_factory(tag):
        def factory(backbone, teacher, config):
            from dpdmd.anchors import LocalAnchors

            inner = LocalAnchors(backbone, teacher, config.anchor_k)

            def provider(batch, cond, uncond):
                seen.setdefault(tag, []).append((batch.iteration, batch.prompts, batch.x1.clone(),
                                                 batch.dmd_level_index, batch.dmd_eps.clone()))
                return inner(batch, cond, uncond)
            return provider
        return factory

    train(fast_config(anchor_k=2, lambda_div=0.05), anchors=recording_factory("a"), progress=False)
    train(fast_config(anchor_k=8, lambda_div=0.7), anchors=recording_factory("b"), progress=False)
    assert len(seen["a"]) == len(seen["b"]) == 3
    for (ia, pa, xa, la, ea), (ib, pb, xb, lb, eb) in zip(seen["a"], seen["b"]):
        assert ia == ib and pa == pb and la == lb
        assert torch.equal(xa, xb) and torch.equal(ea, eb)


def test_runs_sharing_an_anchor_cache_without_ray_compute_each_anchor_once():
    """Two runs with the same anchor key (backbone, seed, batch, prompts; another K and
    lambda_div) share `InMemoryAnchorCache`: the first computes every K of ``ks`` per iteration,
    the second only reads, and reads the anchors it would have computed alone."""
    cache, ks = InMemoryAnchorCache(), [2, 8]
    at_end = EvalConfig(prompts=["3"], seeds_per_prompt=4, every=0)  # one small evaluation: the counts are cumulative
    first = run(fast_config(anchor_k=2, lambda_div=0.05, eval=at_end), anchors=shared_anchors(cache, ks))[-1]
    second = run(fast_config(anchor_k=8, lambda_div=0.7, eval=at_end), anchors=shared_anchors(cache, ks))[-1]
    updates = first["student_updates"]
    assert updates == 3 and len(cache.entries) == updates  # one entry per student iteration
    # flow: one pass to K_max = 8 < teacher_steps gives both targets, 8 guided evaluations
    assert (first["anchor_misses"], first["anchor_hits"], first["anchor_teacher_calls"]) == (updates, 0, updates * 8)
    assert (second["anchor_misses"], second["anchor_hits"], second["anchor_teacher_calls"]) == (0, updates, 0)
    assert second["anchor_teacher_calls_alone"] == updates * 8 and cache.teacher_calls == updates * 8
    alone = run(fast_config(anchor_k=8, lambda_div=0.7, eval=at_end))[-1]  # LocalAnchors: no cache
    assert {k: second[k] for k in LOSSES} == {k: alone[k] for k in LOSSES}


def test_vanilla_dmd_asks_for_no_anchor():
    calls = []

    def factory(backbone, teacher, config):
        return lambda batch, cond, uncond: calls.append(1)

    reports = run(fast_config(lambda_div=0.0), anchors=factory)
    assert calls == [] and all(r["loss_div"] == 0 for r in reports)


def test_outputs_and_exact_resume(tmp_path):
    full = tmp_path / "full"
    reports_full = run(fast_config(iterations=24), out_dir=full)
    for name in ("metrics.csv", "config.json", "teacher_metrics.json", "samples/teacher.png",
                 "samples/student_latest.png", f"{CHECKPOINT}/state.pt", "student/dpdmd_student.json",
                 "student/transformer/config.json"):
        assert (full / name).exists(), name
    with open(full / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["student_updates"]) for r in rows] == [1, 2, 3, 4]

    # stop after 12 iterations, then resume to 24: the same numbers as the uninterrupted run
    part = tmp_path / "part"
    run(fast_config(iterations=12), out_dir=part)
    state = torch.load(part / CHECKPOINT / "state.pt", weights_only=False)
    state["config"]["iterations"] = 24  # the checkpoint of a run that was killed at iteration 12
    torch.save(state, part / CHECKPOINT / "state.pt")
    resumed = run(fast_config(iterations=24), out_dir=part, resume_from=part / CHECKPOINT)
    assert [r["student_updates"] for r in resumed] == [3, 4]
    for a, b in zip(resumed, reports_full[2:]):
        assert a["loss_dmd"] == b["loss_dmd"] and a["diversity"] == b["diversity"]


@pytest.mark.parametrize("changes, needle", [
    ({"anchor_k": 0}, "anchor_k"),
    ({"anchor_k": 31}, "anchor_k"),
    ({"lambda_div": -0.1}, "lambda_div"),
    ({"backbone": "sd99"}, "unknown backbone 'sd99'"),
    ({"prompts": ["a cat"]}, "unknown digits prompt 'a cat'"),
])
def test_bad_input_is_refused_before_training(changes, needle, monkeypatch):
    import dpdmd.training.loop as loop

    monkeypatch.setattr(loop, "build_method", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ConfigError, match=needle):
        train(TrainConfig(**{"device": "cpu", **changes}), progress=False)


def test_cli_refuses_bad_input_with_exit_2(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("anchor_k: [unclosed\n")
    cases = [
        (["--anchor-k", "40"], "anchor_k: 40"),
        (["--lambda-div", "-1"], "lambda_div"),
        (["--backbone", "nope"], "available: "),
        (["--prompts", "a dog"], "unknown digits prompt"),
        (["--config", str(tmp_path / "missing.yaml")], "cannot read the file"),
        (["--config", str(bad_yaml)], "not valid YAML"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        proc = subprocess.run([sys.executable, "-m", "dpdmd.train", "--out", str(out), *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
        assert not out.exists(), "nothing may start on bad input"


def test_config_file_rejects_unknown_keys(tmp_path):
    from dpdmd.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("anchor_k: 5\nlambda_dvi: 0.1\neval: {seeds: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "lambda_dvi: unknown key" in str(err.value) and "eval.seeds: unknown key" in str(err.value)


def test_the_api_train_survives_importing_the_command_line(tmp_path):
    """`dpdmd.train(config, out_dir=...)` stays the function after the command line's module is
    imported (a submodule named `dpdmd.train` would replace the package attribute)."""
    import importlib

    import dpdmd
    import dpdmd.cli.train  # noqa: F401 - the command line, imported first

    with pytest.raises(ImportError, match="dpdmd.cli.train"):
        importlib.import_module("dpdmd.train")  # only `python -m dpdmd.train` runs that file
    assert callable(dpdmd.train) and dpdmd.train is train
    metrics = dpdmd.train(fast_config(iterations=6), out_dir=tmp_path / "run", progress=False)
    assert metrics["student_updates"] == 1 and (tmp_path / "run" / "metrics.csv").exists()
