"""DP-DMD, step for step as ``shared/docs/method.md`` ("One training iteration").

`DPDMD` holds the three networks and the two optimisers and performs the two kinds of update:
`student_update` (steps 1-6 of the student iteration; the teacher anchor of steps 1-2 arrives
precomputed from an anchor provider) and `fake_update` (the fake-score iteration). The
parameterisation-specific formulas (targets, Euler vs DDIM steps, the normalised DMD gradient)
live in `dpdmd.schedules`; the losses in `dpdmd.losses`.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch
from torch import nn

from .backbones.base import Backbone, Embeddings
from .losses import diversity_loss, dmd_loss, fake_score_loss
from .parallel.optimizers import make_optimizer
from .stream import Batch


class DPDMD:
    """The student G, the fake score F, the frozen teacher T, and their updates.

    Args (keyword-only):
        backbone: supplies the networks, the schedule and the guided teacher.
        lambda_div: weight of L_div; 0 is vanilla DMD.
        stop_grad: the stop-gradient after the first student step (False: the paper's ablation).
        lr_student, lr_fake: AdamW learning rates.
        weight_decay, betas: AdamW settings (reference: 0, (0.9, 0.999)).
        grad_clip: max gradient norm for both networks (reference: 1.0).
        mixed_precision: "no" or "bf16" (autocast; the master weights stay fp32).
        optimizer: "adamw" (default), "adamw8bit" or "adamw_offload" (`dpdmd.parallel.optimizers`).
    """

    def __init__(self, backbone: Backbone, *, lambda_div: float, stop_grad: bool = True,
                 lr_student: float, lr_fake: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), grad_clip: float = 1.0,
                 mixed_precision: str = "no", optimizer: str = "adamw"):
        self.backbone = backbone
        self.schedule = backbone.schedule
        self.lambda_div = lambda_div
        self.stop_grad = stop_grad
        self.grad_clip = grad_clip
        self.teacher, self.student, self.fake = backbone.build_networks()
        adamw = dict(weight_decay=weight_decay, betas=betas, device=backbone.device)
        self.opt_student = make_optimizer(optimizer, self.trainable(self.student), lr=lr_student, **adamw)
        self.opt_fake = make_optimizer(optimizer, self.trainable(self.fake), lr=lr_fake, **adamw)
        self.autocast_dtype = torch.bfloat16 if mixed_precision == "bf16" else None
        self.seconds: dict[str, float] = defaultdict(float)  # time per phase, for the benchmark
        self.synchronize = False  # set True to time GPU phases exactly (adds a sync per phase)

    @staticmethod
    def trainable(net: nn.Module) -> list[nn.Parameter]:
        return [p for p in net.parameters() if p.requires_grad]

    # --- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str):
        """Accumulate wall time of a phase ("rollout", "dmd", "fake", ...) in ``self.seconds``."""
        if self.synchronize and torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if self.synchronize and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[name] += time.perf_counter() - start

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.backbone.device.type, dtype=self.autocast_dtype)

    def _predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        with self.autocast():
            return self.backbone.predict(net, x, level, emb).float()

    def _guided_teacher(self, x: torch.Tensor, level, cond: Embeddings, uncond: Embeddings) -> torch.Tensor:
        with self.autocast():
            return self.backbone.guided(self.teacher, x, level, cond, uncond).float()

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        """Backward, clip the gradient norm (1.0 in the reference), AdamW step; returns the norm."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()
        return float(norm)

    # --- the student's sample ------------------------------------------------------------------
    def rollout(self, x1: torch.Tensor, cond: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
        """Student step 3: the few-step sample from x1, with gradients as the method wants them.

        Returns (out1, x_s): the first step's network output G(x1, s_0) (velocity or eps) and the
        student's sample. With ``stop_grad`` the state after the first step is detached, so the
        DMD loss reaches G only through steps 2..n, while L_div trains the first step.
        """
        levels = self.schedule.student_levels
        out1 = self._predict(self.student, x1, levels[0], cond)
        x = self.schedule.step(x1, out1, levels[0], levels[1])
        if self.stop_grad:
            x = x.detach()  # the stop-gradient after the first step
        for j in range(1, len(levels) - 1):
            x = self.schedule.step(x, self._predict(self.student, x, levels[j], cond), levels[j], levels[j + 1])
        return out1, x

    @torch.no_grad()
    def sample(self, x1: torch.Tensor, cond: Embeddings) -> torch.Tensor:
        """The student's few-step sample, no gradients (evaluation, fake-score step 1)."""
        return self.rollout(x1, cond)[1]

    # --- the two updates -----------------------------------------------------------------------
    def student_update(self, batch: Batch, cond: Embeddings, uncond: Embeddings,
                       first_step_target: torch.Tensor | None) -> dict[str, float]:
        """One student iteration. ``first_step_target`` is the teacher anchor's (steps 1-2: K =
        ``anchor_k`` guided teacher steps, `dpdmd.anchors`); it may be None when lambda_div == 0
        (vanilla DMD needs no anchor)."""
        device = self.backbone.device
        x1 = batch.x1.to(device)
        with self.phase("rollout"):
            # 3. The student's rollout, with the stop-gradient after the first step.
            out1, x_s = self.rollout(x1, cond)
            # 4. L_div: the first step against the teacher's anchored target.
            if first_step_target is not None:
                loss_div = diversity_loss(self.schedule.first_step_prediction(x1, out1), first_step_target)
            else:
                loss_div = torch.zeros((), device=device)
        with self.phase("dmd"):
            # 5. DMD: noise the sample to one level; real (teacher, CFG) and fake scores, no grad.
            level = self.schedule.dmd_levels[batch.dmd_level_index]
            with torch.no_grad():
                x_t = self.schedule.add_noise(x_s.detach(), batch.dmd_eps.to(device), level)
                real_out = self._guided_teacher(x_t, level, cond, uncond)
                fake_out = self._predict(self.fake, x_t, level, cond)
                grad = self.schedule.dmd_gradient(x_s.detach(), x_t, level, real_out, fake_out)
            loss_dmd = dmd_loss(x_s, grad)
        with self.phase("student_backward"):
            # 6. L = L_dmd + lambda_div L_div; clip to 1.0; AdamW step on G.
            loss = loss_dmd + self.lambda_div * loss_div
            norm = self._step(self.opt_student, loss)
        return {"loss_dmd": float(loss_dmd.detach()), "loss_div": float(loss_div.detach()), "loss_student": float(loss.detach()),
                "grad_norm_student": norm}

    def fake_update(self, batch: Batch, cond: Embeddings) -> dict[str, float]:
        """One fake-score iteration: F learns the score of the student's current samples."""
        device = self.backbone.device
        with self.phase("fake"):
            # 1. The full student sample, no grad.
            x_s = self.sample(batch.x1.to(device), cond)
            # 2. Noise it to one level of the 1000-step grid.
            level = self.schedule.dmd_levels[batch.dmd_level_index]
            eps = batch.dmd_eps.to(device)
            x_t = self.schedule.add_noise(x_s, eps, level)
            # 3. Regress F on the student's flow (eps - x_s) or on eps; clip; AdamW step on F.
            loss = fake_score_loss(self._predict(self.fake, x_t, level, cond), self.schedule.fake_target(x_s, eps))
            norm = self._step(self.opt_fake, loss)
        return {"loss_fake": float(loss.detach()), "grad_norm_fake": norm}

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Trainable weights and optimiser states of G and F (the teacher is never saved)."""
        def weights(net):
            return {n: p.detach().cpu() for n, p in net.named_parameters() if p.requires_grad}
        return {"student": weights(self.student), "fake": weights(self.fake),
                "opt_student": self.opt_student.state_dict(), "opt_fake": self.opt_fake.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for net, key in ((self.student, "student"), (self.fake, "fake")):
            missing = set(state[key]) - {n for n, _ in net.named_parameters()}
            if missing:
                raise ValueError(f"checkpoint has weights this backbone lacks: {sorted(missing)[:5]}")
            net.load_state_dict(state[key], strict=False)
        self.opt_student.load_state_dict(state["opt_student"])
        self.opt_fake.load_state_dict(state["opt_fake"])
