"""The trial side of a search: what runs in each Ray Tune trial and the caches the trials share.

- `trainable`: one trial, a thin wrapper around `dpdmd.train` that reports to Tune;
- `multi_gpu`: a trial trained data-parallel by several workers in its placement group;
- `objective`: the teacher-normalised scores and the combined objective J each report carries;
- `anchor_store`: the store of teacher anchors and prompt embeddings shared by the trials;
- `cache_stats`: that store's statistics over a whole search.
"""
