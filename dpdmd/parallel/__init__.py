"""DP-DMD at GPU scale: data parallelism (`distributed`), FSDP2 sharding (`sharding`) and its
checkpoints written shard by shard (`sharded_checkpoint`), regional
compilation and gradient checkpointing (`acceleration`), the optimisers (`optimizers`), and the
GPU memory model of one trial (`memory`, ``python -m dpdmd.parallel.memory``). Each is imported on
its own: `sharding` pulls in torch.distributed."""
