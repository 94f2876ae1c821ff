"""Pretraining of the built-in digits teachers (flow matching or eps prediction, with label dropout
for CFG and an EMA of the weights). Deterministic for a given `DigitsPretrainConfig`."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..data import digits as digits_data
from .digits_net import DigitsPretrainConfig, build_network, call_network, class_embeddings, fold


def pretrain(config: DigitsPretrainConfig, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """Train a teacher from scratch; returns the EMA state dict."""
    from ..schedules import EpsSchedule

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    images, labels = digits_data.load_digits()
    data = fold(images)
    net = build_network(config.kind).train()
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, warmup, config.steps))
    alphas_cumprod = EpsSchedule().alphas_cumprod.float()
    start = time.time()
    bar = tqdm(range(config.steps), desc=f"pretrain digits-{config.kind}", disable=not progress)
    for step in bar:
        loss = optimisation_step(net, opt, sched, noisy_batch(config, data, labels, generator, alphas_cumprod))
        # EMA with warm-up, (1 + step) / (10 + step) as diffusers' EMAModel: a fixed 0.999 over 1500
        # steps would still hold 22% of the random initialisation at the end. Not EMAModel itself,
        # nor get_cosine_schedule_with_warmup (`lr_factor`): they train other weights than the shipped
        # teachers' (EMAModel's first update has decay 0, ours 0.1; its warm-up starts at lr 0 and its
        # cosine after it). Measured over 40 steps of digits-flow (bench/digits_pretrain_library_check.py):
        # EMAModel alone differs by up to 3.0e-8, with the diffusers schedule by up to 0.022.
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for key, value in net.state_dict().items():
                ema[key].lerp_(value, 1.0 - decay) if value.is_floating_point() else ema[key].copy_(value)
        bar.set_postfix(loss=f"{loss.item():.4f}", elapsed=f"{time.time() - start:.0f}s")
    return {k: v.contiguous() for k, v in ema.items()}


def optimisation_step(net: torch.nn.Module, opt: torch.optim.Optimizer, sched, batch: tuple) -> torch.Tensor:
    """One AdamW step on the MSE of ``batch`` (`noisy_batch`), the gradient norm clipped to 1.0,
    then one step of the learning-rate schedule ``sched``; returns the loss."""
    x_t, timestep, emb, target = batch
    loss = torch.nn.functional.mse_loss(call_network(net, x_t, timestep, emb), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """The learning rate's factor at ``step``: a linear warm-up over ``warmup`` steps times a cosine
    decay over all ``steps`` (both from step 0, unlike diffusers' `get_cosine_schedule_with_warmup`,
    whose warm-up starts at 0 and whose cosine starts after it)."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / steps)).item())


def noisy_batch(config: DigitsPretrainConfig, data: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    """One training batch drawn from ``generator``: (x_t (B, 16, 8, 8), the network's timestep (B,),
    the label embeddings (labels dropped to None with ``label_dropout``), the regression target)."""
    idx = torch.randint(0, len(data), (config.batch_size,), generator=generator)
    x0 = data[idx]
    eps = torch.randn(x0.shape, generator=generator)
    drop = torch.rand(config.batch_size, generator=generator) < config.label_dropout
    emb = class_embeddings([None if d else int(c) for c, d in zip(labels[idx], drop)])
    if config.kind == "flow":
        # Levels from the shifted grid the samplers spend their steps on.
        u = torch.rand(config.batch_size, generator=generator)
        s = config.shift * u / (1 + (config.shift - 1) * u)
        x_t = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * eps
        return x_t, 1000.0 * s, emb, eps - x0
    t = torch.randint(0, 1000, (config.batch_size,), generator=generator)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return x_t, t.float(), emb, eps
