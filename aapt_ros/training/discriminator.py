"""The discriminator of the adversarial stage: the generator's network with one logit per frame.

AAPT (arXiv 2506.09350, sec. 3.3) gives the discriminator the generator's block-causal
architecture and initialises it from the stage-1 (``adapt``) weights: a network that already
models latent video under the same causal attention. A frame's logit reads the last block's
tokens of that frame (layer norm, mean over the frame's tokens, a linear head), so frame i is
judged from frames <= i of its own sequence, and all frames of a sequence in one pass.

Input per frame as the generator's: the frame's latent as the "noisy" input at t = 0 (a clean
latent), its recycled input = the previous frame of the SAME sequence (real or generated), the
rays and the action. Frame 0 is the clean sink, shared by the real and the generated sequence,
and gets no logit.
"""

from __future__ import annotations

import torch
from torch import nn

from aapt_ros.model.generator import CausalGenerator


class Discriminator(nn.Module):
    """A ``CausalGenerator`` body with a per-frame logit head."""

    def __init__(self, body: CausalGenerator):
        super().__init__()
        self.body = body
        dim = body.config.generator.dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.head = nn.Linear(dim, 1)
        # Zero-initialised: the discriminator starts neutral (every logit 0, both losses log 2)
        # instead of with a random opinion, and the run does not depend on a global seed.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def head_parameters(self) -> list[nn.Parameter]:
        """The new head's weights. RMSProp moves every weight by about its rate per step, whatever the
        gradient's size; a separating head needs weights of order 0.1-1 while the pretrained trunk
        must move by 1e-5-ish, so the head trains at ``adversarial.d_head_lr``, the trunk at ``d_lr``.
        (One rate for both left the first GPU runs' pairing loss at ln 2 for hundreds of steps; a
        head gain of 200 instead made the logits jump by about 1 per step and the discriminator
        collapse to a constant, 2026-11-21.)"""
        return list(self.head.parameters())

    def forward(
        self,
        frames: torch.Tensor,
        before: torch.Tensor,
        sink: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of frames s .. s + S - 1 of a sequence (s >= 1): (B, S) float32, higher = more real.

        frames: (B, S, C, h, w) latents; before: (B, C, h, w) frame s - 1 (the sink when s = 1),
        the recycled input of frame s; sink: (B, C, h, w) frame 0; rays (B, 1 + S, R, h, w) and
        action (B, 1 + S, A) of frames 0, s, ..., s + S - 1.
        """
        sequence = torch.cat([sink[:, None], frames], dim=1)  # (B, 1 + S, C, h, w)
        previous = torch.cat([sink[:, None], before[:, None], frames[:, :-1]], dim=1)  # (B, 1 + S, C, h, w)
        t = torch.zeros(sequence.shape[:2], device=frames.device)  # (B, 1 + S): clean latents
        tokens, _, _ = self.body.segment_features(sequence, previous, rays, action, t, None)  # (B, 1 + S, T, dim)
        pooled = self.norm(tokens[:, 1:]).mean(dim=2)  # (B, S, dim), no logit for the sink
        logits: torch.Tensor = self.head(pooled)  # (B, S, 1)
        return logits[..., 0].float()
