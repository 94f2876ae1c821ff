"""Noise grids and the two parameterisations of method.md: flow (SD3, SD3.5) and eps (SDXL).

A *level* is where on the noise path a state sits: sigma ``s`` in [0, 1] for flow, the integer
timestep ``t`` in [0, 999] for eps. Each schedule holds three grids, all taken from diffusers'
own schedulers so the built-in and real backbones share them:

- ``student_levels``: the student's 4 steps, then the terminal level (flow 0, eps -1 = clean);
- ``teacher_levels``: the teacher's ``teacher_steps`` steps, then the terminal level;
- ``dmd_levels``: the 1000-step training grid from which DMD and the fake score draw one level.

Every method that mixes levels and states works on (B, C, H, W) tensors; a level is a Python
number or a 0-d tensor. Conversions to x0 happen in float64, as method.md asks for eps.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

Tensor = torch.Tensor


def _mean_abs_per_sample(x: Tensor) -> Tensor:
    """mean over C, H, W of |x|, shaped (B, 1, 1, 1) for broadcasting."""
    return x.abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)


class FlowSchedule:
    """Rectified flow: ``x_s = (1 - s) x0 + s eps``, the network predicts ``v = eps - x0``."""

    kind = "flow"

    def __init__(self, *, shift: float = 3.0, teacher_steps: int = 30, student_steps: int = 4):
        self.shift = shift
        self.teacher_steps = teacher_steps
        self.student_steps = student_steps
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(student_steps)
        self.student_levels = scheduler.sigmas.double().tolist()  # [1.0, 0.8577, 0.6022, 0.0089, 0.0]
        scheduler.set_timesteps(teacher_steps)
        self.teacher_levels = scheduler.sigmas.double().tolist()
        scheduler.set_timesteps(1000)
        self.dmd_levels = scheduler.sigmas[:-1].double().tolist()

    def student_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        """The diffusers scheduler whose ``student_steps``-step grid is the student's (Euler, the
        same shift): what a pipeline sampling the student uses."""
        return FlowMatchEulerDiscreteScheduler(shift=self.shift)

    def net_timestep(self, level) -> float:
        """The transformer's timestep input: 1000 s."""
        return 1000.0 * float(level)

    def add_noise(self, x0: Tensor, eps: Tensor, level) -> Tensor:
        s = float(level)
        return (1.0 - s) * x0 + s * eps

    def step(self, x: Tensor, v: Tensor, level, next_level) -> Tensor:
        """One Euler step along the predicted velocity: ``x + (s_next - s) v``."""
        return x + (float(next_level) - float(level)) * v

    def to_x0(self, x_t: Tensor, v: Tensor, level) -> Tensor:
        return (x_t.double() - float(level) * v.double()).to(x_t.dtype)

    # --- DP-DMD pieces (method.md, "One training iteration") ---
    def first_step_prediction(self, x1: Tensor, v1: Tensor) -> Tensor:
        """What L_div compares for flow: the student's first-step velocity itself."""
        return v1

    def first_step_target(self, x1: Tensor, z_k: Tensor, level_k, teacher_out: Tensor | None) -> Tensor:
        """Step 2: ``v_tgt = (x1 - z_K) / (1 - s_K)``, the mean teacher velocity over [s_K, 1]."""
        return (x1 - z_k) / (1.0 - float(level_k))

    target_needs_teacher_output = False  # flow's target uses only x1 and z_K

    def dmd_gradient(self, x_s: Tensor, x_t: Tensor, level, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """Step 5: ``(v_r - v_f) / mean_CHW |v_r|`` per sample, NaNs zeroed."""
        grad = (real_out.float() - fake_out.float()) / _mean_abs_per_sample(real_out.float())
        return torch.nan_to_num(grad)

    def fake_target(self, x_s: Tensor, eps: Tensor) -> Tensor:
        """The fake score regresses the flow velocity of the student's samples: ``eps - x_s``."""
        return eps - x_s


class EpsSchedule:
    """VP diffusion: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, the network predicts eps.

    Students step deterministically (DDIM, eta = 0) on the trailing grid [999, 749, 499, 249];
    the terminal level -1 stands for the clean sample (abar = 1).
    """

    kind = "eps"
    TERMINAL = -1

    def __init__(
        self,
        *,
        teacher_steps: int = 30,
        student_steps: int = 4,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
    ):
        self.teacher_steps = teacher_steps
        self.student_steps = student_steps
        self.betas = {"beta_start": beta_start, "beta_end": beta_end, "beta_schedule": beta_schedule}
        scheduler = DDIMScheduler(
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            timestep_spacing="trailing",
            clip_sample=False,
            set_alpha_to_one=False,
        )
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        scheduler.set_timesteps(student_steps)
        self.student_levels = scheduler.timesteps.tolist() + [self.TERMINAL]  # [999, 749, 499, 249, -1]
        scheduler.set_timesteps(teacher_steps)
        self.teacher_levels = scheduler.timesteps.tolist() + [self.TERMINAL]
        self.dmd_levels = list(range(999, -1, -1))

    def student_scheduler(self) -> DDIMScheduler:
        """The diffusers scheduler whose ``student_steps``-step grid is the student's: DDIM on the
        trailing timesteps, eta 0, ending at the clean sample (``set_alpha_to_one``: abar = 1 after
        the last step, as the terminal level here). A pipeline sampling the student uses it."""
        return DDIMScheduler(**self.betas, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True,
                             steps_offset=0, prediction_type="epsilon")

    def abar(self, level) -> float:
        t = int(level)
        return 1.0 if t == self.TERMINAL else float(self.alphas_cumprod[t])

    def net_timestep(self, level) -> float:
        return float(int(level))

    def add_noise(self, x0: Tensor, eps: Tensor, level) -> Tensor:
        a = self.abar(level)
        return a**0.5 * x0 + (1.0 - a) ** 0.5 * eps

    def to_x0(self, x_t: Tensor, eps: Tensor, level) -> Tensor:
        """``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``, in float64."""
        a = self.abar(level)
        return ((x_t.double() - (1.0 - a) ** 0.5 * eps.double()) / a**0.5).to(x_t.dtype)

    def to_eps(self, x_t: Tensor, x0: Tensor, level) -> Tensor:
        a = self.abar(level)
        return ((x_t.double() - a**0.5 * x0.double()) / (1.0 - a) ** 0.5).to(x_t.dtype)

    def step(self, x: Tensor, eps: Tensor, level, next_level) -> Tensor:
        """DDIM (eta = 0): predict x0, then re-noise it to the next level with the same eps."""
        x0 = self.to_x0(x, eps, level)
        if int(next_level) == self.TERMINAL:
            return x0
        return self.add_noise(x0, eps, next_level)

    # --- DP-DMD pieces (method.md, "Eps (diffusion) backbones") ---
    def first_step_prediction(self, x1: Tensor, eps1: Tensor) -> Tensor:
        """``x0_stu = (x1 - sqrt(1 - abar_T) eps_G(x1)) / sqrt(abar_T)``."""
        return self.to_x0(x1, eps1, self.student_levels[0])

    def first_step_target(self, x1: Tensor, z_k: Tensor, level_k, teacher_out: Tensor | None) -> Tensor:
        """The teacher's own denoised prediction at the anchor (z_K itself once clean)."""
        if int(level_k) == self.TERMINAL:
            return z_k
        return self.to_x0(z_k, teacher_out, level_k)

    target_needs_teacher_output = True  # the x0 target needs eps_T(z_K) with CFG

    def dmd_gradient(self, x_s: Tensor, x_t: Tensor, level, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """DMD2: ``(x0_f - x0_r) / mean_CHW |x_s - x0_r|`` from eps predictions in float64."""
        x0_real = self.to_x0(x_t.double(), real_out.double(), level)
        x0_fake = self.to_x0(x_t.double(), fake_out.double(), level)
        grad = (x0_fake - x0_real) / _mean_abs_per_sample(x_s.double() - x0_real)
        return torch.nan_to_num(grad).to(x_s.dtype)

    def fake_target(self, x_s: Tensor, eps: Tensor) -> Tensor:
        """The fake score is trained with the eps loss."""
        return eps


Schedule = FlowSchedule | EpsSchedule
