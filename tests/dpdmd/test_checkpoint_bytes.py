"""dpdmd.training.checkpoint_bytes: the arithmetic of what a run writes, against what it writes."""

from __future__ import annotations

import pytest

from dpdmd.training.checkpoint_bytes import count_parameters, state_bytes, student_bytes
from tests.bench_scripts import load_bench

TINY_SD3 = dict(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32,
                pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm")


def test_the_meta_count_is_the_built_networks():
    from diffusers import SD3Transformer2DModel
    from peft import LoraConfig, get_peft_model

    from dpdmd.backbones.sd3 import SD3_LORA_TARGETS

    counted = count_parameters("SD3Transformer2DModel", TINY_SD3, lora_rank=4, lora_targets=SD3_LORA_TARGETS)
    net = SD3Transformer2DModel(**TINY_SD3)
    assert counted["params"] == sum(p.numel() for p in net.parameters())
    lora = get_peft_model(net, LoraConfig(r=4, lora_alpha=4, target_modules=list(SD3_LORA_TARGETS)))
    assert counted["lora"] == sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n) > 0
    with pytest.raises(ValueError, match="not a diffusers model class"):
        count_parameters("Nope", {})


def test_the_arithmetic():
    assert state_bytes(1000) == 24_000  # 2 networks x (4 bytes of weight + 8 of AdamW moments)
    assert state_bytes(1024, optimizer="adamw8bit") == 2 * 1024 * (4 + 2 + 8 / 256)
    assert student_bytes(params=1000, dtype="bfloat16") == 2000
    assert student_bytes(params=1000, train_mode="lora", lora=10) == 40  # the adapter, float32
    with pytest.raises(ValueError, match="adapter"):
        student_bytes(params=1000, train_mode="lora")
    with pytest.raises(ValueError, match="optimizer"):
        state_bytes(1, optimizer="sgd")


def test_the_files_written_match_the_arithmetic(tmp_path):
    """bench/checkpoint_sizes.py's measurement: state.pt and the student folder that
    `save_checkpoint` and `save_student` write, after one fake and one student update."""
    bench = load_bench("checkpoint_sizes")
    rows = {(r["backbone"], r["mode"]): r for r in bench.measured_rows(tmp_path, cases=(("digits-flow", "full"),
                                                                                        ("sd35m", "lora")))}
    digits = rows[("digits-flow", "full")]
    assert digits["params"] == digits["trained"] == 581_008
    assert 1.0 <= digits["state_written"] / digits["state_expected"] < 1.03  # names and pickling: under 3%
    assert 1.0 <= digits["student_written"] / digits["student_expected"] < 1.03
    lora = rows[("sd35m (tiny pipeline)", "lora")]
    assert lora["trained"] < lora["params"] and lora["dtype"] == "float32"
    # tiny networks: the overhead (tensor names, configs, the scheduler) is a few tens of kB
    assert 0 <= lora["state_written"] - lora["state_expected"] < 100_000
    assert 0 <= lora["student_written"] - lora["student_expected"] < 20_000
