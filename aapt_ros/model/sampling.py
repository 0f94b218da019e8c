"""Flow-matching schedules and the conversion between velocity and clean latents.

Parametrisation (rectified flow): x_t = (1 - t) x0 + t * noise, v = noise - x0, t in [0, 1].
"""

from __future__ import annotations

import torch


def shifted_timesteps(num_steps: int, shift: float, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(num_steps + 1,) times from 1 to 0, warped by t' = shift t / (1 + (shift - 1) t) (SD3).

    A shift above 1 spends more of the steps at high noise, where the image layout is decided.
    One step is always [1, 0]: a single pass from pure noise to the clean latent.
    """
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64, device=device)
    return shift * t / (1 + (shift - 1) * t)


def velocity_to_x0(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - t * v, evaluated in float64 and returned in x_t's dtype; t broadcasts from (B,)."""
    t64 = t.double().reshape(-1, *([1] * (x_t.dim() - 1)))
    return (x_t.double() - t64 * velocity.double()).to(x_t.dtype)


def euler_update(x_t: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next (t_next < t)."""
    return (x_t.double() + (t_next - t) * velocity.double()).to(x_t.dtype)
