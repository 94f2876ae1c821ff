"""Prompt embeddings of bf16 backbones (SD on a GPU) go through the search's shared cache.

numpy has no bfloat16: ``.numpy()`` of a bf16 tensor raises, which failed every trial of the
first GPU search (bench/README_gpu.md, section 3). The cache widens them to float32, exactly.
"""

import torch

from tune.trial.anchor_store import cached_prompt_lookup


class DirectCache:
    """The `SharedCache` interface without Ray: always computes."""

    def get_or_compute(self, key, compute):
        return compute()[0]


class Bf16Backbone:
    device = torch.device("cpu")

    def __init__(self):
        self.emb = {"encoder_hidden_states": torch.randn(1, 5, 8).to(torch.bfloat16),
                    "labels": torch.tensor([3])}

    def encode_prompts(self, prompts):
        return self.emb


def test_bf16_embeddings_are_cached_as_exact_float32_and_integers_stay_integers():
    backbone = Bf16Backbone()
    (row,) = cached_prompt_lookup(DirectCache(), backbone, "weights-id")(["a dog"])
    assert row["encoder_hidden_states"].dtype == torch.float32
    assert torch.equal(row["encoder_hidden_states"], backbone.emb["encoder_hidden_states"].float())
    assert row["labels"].dtype == torch.int64 and row["labels"].item() == 3
