"""The command lines, each a ``main(argv) -> exit status`` that ``python -m dpdmd.X`` runs
(`dpdmd.train`, `dpdmd.evaluate`, `dpdmd.pretrain` are the runners):

- `train`: train one student (``python -m dpdmd.train``);
- `evaluate`: score a trained student or the teacher (``python -m dpdmd.evaluate``);
- `pretrain`: pretrain a built-in digits teacher (``python -m dpdmd.pretrain``);
- `flags`: the training flags, generated from `dpdmd.TrainConfig`.
"""
