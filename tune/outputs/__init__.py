"""What a search reports and writes: its results and front (`results`), the plots (`plots`), the
W&B summary run (`wandb`) and the failed trials made visible (`failures`)."""
