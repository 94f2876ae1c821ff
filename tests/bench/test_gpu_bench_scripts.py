"""The GPU benchmarks' own logic, run on the CPU: `bench/gpu_step.py`'s kernel profile and
`bench/attention_backends.py` (their GPU numbers are in bench/README_gpu.md)."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def gpu_step():
    return load_bench("gpu_step")


@pytest.mark.parametrize("name, kind", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_TNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "gemm"),
    ("triton_per_fused__to_copy_add_mul_native_layer_norm_3", "triton"),
    ("triton_poi_fused__scaled_dot_product_cudnn_attention__unsafe_view_add_cat_mul_transpose_view_6", "triton"),
    ("void at::native::(anonymous namespace)::fused_adamw_kernel", "optimizer"),
    ("void at::native::lpnorm_cleanup<float, (at::native::NormType)1, float, float>", "optimizer"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", "other"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "other"),
])
def test_kernel_classes(gpu_step, name, kind):
    assert gpu_step.kernel_class(name) == kind


def test_profile_table_bounds_the_cycle_by_attention_and_gemm_time(gpu_step):
    # 1 TFLOP per phase; anchor and student spend 2 ms in attention + gemm, each fake update 1 ms.
    flops = {"anchor": 1e12, "rollout": 0.5e12, "dmd": 0.25e12, "student_backward": 0.25e12, "fake": 1e12}
    prof = {"anchor": {"attention": 1.0, "gemm": 1.0, "triton": 5.0},
            "student": {"attention": 1.5, "gemm": 0.5, "other": 3.0},
            "fake": {"gemm": 1.0, "optimizer": 2.0}}
    lines = gpu_step.profile_table(prof, flops, ceiling=1000.0).splitlines()
    anchor = lines[2].split(" | ")
    assert anchor[0] == "| anchor" and anchor[-1] == "50 |"  # 1 TFLOP / 2 ms = 500 TFLOP/s = 50%
    cycle = lines[-1].split(" | ")
    # 7 TFLOP (1 + 1 + 5 x 1) over 2 + 2 + 5 x 1 = 9 ms of attention + gemm: 778 TFLOP/s = 78%
    assert cycle[0] == "| cycle" and cycle[-1] == "78 |"
    assert cycle[3] == "5" and cycle[4] == "10"  # triton 5 ms; optimizer 5 x 2 ms


def test_gpu_step_profiles_each_phase(gpu_step, tmp_path):
    assert gpu_step.main(["--smoke", "--models", "sd35m", "--setups", "lora", "--configs", "64:1", "--reps", "1",
                          "--fake-reps", "1", "--anchor-k", "2", "--profile", "--no-md", "--tag", "t", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "gpu_step_t.json").read_text())["rows"][0]
    assert row["status"] == "ok"
    assert set(row["profile_ms"]) == {"anchor", "student", "fake"}
    assert all(sum(ms.values()) > 0 for ms in row["profile_ms"].values())
    top = row["profile_top_kernels"]
    assert 0 < len(top) <= 25 and [k["cycle_ms"] for k in top] == sorted((k["cycle_ms"] for k in top), reverse=True)


def test_top_kernels_weights_the_five_fake_updates(gpu_step):
    by_name = {"anchor": {"triton_a": 3.0}, "student": {"triton_a": 1.0, "gemm_b": 2.0}, "fake": {"gemm_b": 1.0}}
    top = gpu_step.top_kernels(by_name, 1)
    assert top == [{"name": "gemm_b", "class": "gemm", "cycle_ms": 7.0}]  # 2 + 5 x 1 beats 3 + 1


def test_attention_backends_smoke(tmp_path):
    ab = load_bench("attention_backends")
    assert ab.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = {r["backend"]: r for r in json.loads((tmp_path / "attention_backends.json").read_text())["rows"]}
    assert rows["default"]["fwd_ms"] > 0 and rows["default"]["kernel"]
    assert rows["flash"]["fwd_bwd_ms"] > 0
    assert max(rows["flash"]["rel_err"].values()) < 1e-4  # fp32 on the CPU: the same numbers as math
    assert "error" in rows["cudnn"]  # no cuDNN on the CPU: recorded as refused, the run goes on


def test_ceiling_check_measures_both_ways(gpu_step, tmp_path):
    assert gpu_step.main(["--smoke", "--ceiling-check", "2", "--tag", "c", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "ceiling_c.json").read_text())
    assert set(found) == {"as_rows", "steady"} and all(len(v) == 2 and min(v) > 0 for v in found.values())
