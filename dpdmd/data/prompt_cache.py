"""Prompt embeddings, encoded once per distinct prompt.

Text encoders are expensive (T5-XXL for SD3) and the training prompts repeat every epoch, so the
trainer never encodes a prompt twice: `PromptEmbeddingCache` keeps one row per prompt and builds
a batch by concatenating rows. It is the process's one in-memory prompt cache: the student's and
the teacher's samplers (``""`` for CFG included) read it too. Behind it, two stores with other
scopes, both keyed by `dpdmd.data.cache_keys`: the diffusers backbones' disk files (across runs on one
machine) and, in a search, the ``lookup`` into the Ray object store (`tune.trial.anchor_store`: across
the trials of a search, so its text encoders run once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..backbones.base import Backbone, Embeddings, cat_embeddings


class PromptEmbeddingCache:
    """``cache(prompts) -> Embeddings`` (batch = len(prompts)), each prompt encoded once.

    Args:
        backbone: encodes prompts that are not cached yet.
        lookup: optional ``lookup(prompts) -> list[Embeddings]`` of batch-one rows, replacing
            local encoding (e.g. the search's shared cache).
    """

    def __init__(self, backbone: Backbone, lookup: Callable[[Sequence[str]], list[Embeddings]] | None = None):
        self.backbone = backbone
        self.lookup = lookup
        self.rows: dict[str, Embeddings] = {}
        self.encoded = 0  # prompts this process encoded or fetched

    def __call__(self, prompts: Sequence[str]) -> Embeddings:
        missing = sorted(set(prompts) - set(self.rows))
        if missing:
            if self.lookup is not None:
                fetched = self.lookup(missing)
            else:
                batch = self.backbone.encode_prompts(missing)
                fetched = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(len(missing))]
            for prompt, row in zip(missing, fetched):
                self.rows[prompt] = {k: v.to(self.backbone.device) for k, v in row.items()}
            self.encoded += len(missing)
        return cat_embeddings(*(self.rows[p] for p in prompts))
