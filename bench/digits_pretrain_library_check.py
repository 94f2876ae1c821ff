"""Would diffusers' EMAModel and get_cosine_schedule_with_warmup pretrain the digits teachers to the
same weights as `dpdmd.backbones.digits_pretrain`'s own EMA and learning-rate schedule?

    PYTHONPATH=. python bench/digits_pretrain_library_check.py --kind flow --steps 40

Trains ``--steps`` steps three times from the same seed: the shipped code; the same with
diffusers' ``EMAModel(decay=ema_decay)`` (its default warm-up, (1 + s) / (10 + s), as ours) in
place of our EMA; and with ``get_cosine_schedule_with_warmup`` in place of our schedule as well.
Prints the largest absolute difference of the EMA weights from the shipped code's. The shipped
teachers (dpdmd/backbones/weights) may be replaced only by code that gives 0 here.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch


def pretrain_with_diffusers(config, *, schedule: str) -> dict[str, torch.Tensor]:
    """`digits_pretrain.pretrain` with diffusers' EMAModel and, if ``schedule == "diffusers"``,
    diffusers' cosine schedule with warm-up."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from dpdmd.data import digits as digits_data
    from dpdmd.backbones.digits_net import build_network, fold
    from dpdmd.backbones.digits_pretrain import lr_factor, noisy_batch, optimisation_step
    from dpdmd.schedules import EpsSchedule

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    images, labels = digits_data.load_digits()
    data = fold(images)
    net = build_network(config.kind).train()
    ema = EMAModel(net.parameters(), decay=config.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    if schedule == "diffusers":
        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=config.steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, warmup, config.steps))
    alphas_cumprod = EpsSchedule().alphas_cumprod.float()
    for _ in range(config.steps):
        optimisation_step(net, opt, sched, noisy_batch(config, data, labels, generator, alphas_cumprod))
        ema.step(net.parameters())
    ema.copy_to(net.parameters())  # buffers: the network's own (ours copies or averages them too)
    return {k: v.detach().contiguous() for k, v in net.state_dict().items()}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="flow", choices=("flow", "eps"))
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    from dpdmd.backbones.digits_net import DigitsPretrainConfig
    from dpdmd.backbones.digits_pretrain import pretrain

    config = dataclasses.replace(DigitsPretrainConfig(kind=args.kind), steps=args.steps)
    ours = pretrain(config, progress=False)
    ema_only = pretrain_with_diffusers(config, schedule="ours")
    both = pretrain_with_diffusers(config, schedule="diffusers")
    scale = max(float(v.float().abs().max()) for v in ours.values())
    print(f"digits-{args.kind}, {args.steps} steps, seed {config.seed}; largest |weight| {scale:.4g}")
    print(f"  EMAModel, our schedule:                     max |difference| {max_difference(ours, ema_only):.3g}")
    print(f"  EMAModel + get_cosine_schedule_with_warmup: max |difference| {max_difference(ours, both):.3g}")


if __name__ == "__main__":
    main()
