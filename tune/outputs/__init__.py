"""What a search reports and writes: its reports as tables (`results`), the Pareto front and the
summary (`front`), the output files (`files`), the plots (`plots`), the W&B summary run and
per-trial logger (`wandb`), and the failed trials made visible (`failures`)."""
