"""S4WM: a world model whose backbone is any stack of core mixers (S4D by default).

Follows "Facing Off World Model Backbones: RNNs, Transformers, and S4" (Deng, Park and Ahn, 2023,
arXiv 2307.02064). No official code was released; this is built from the paper's description:

- **Posterior per step.** ``q(z_t | x_t)``: an image encoder and a posterior head read each frame
  on its own, so all latents of a sequence are inferred at once (what makes training parallel,
  unlike Dreamer's RSSM whose posterior also reads the recurrent state).
- **Backbone.** ``h_{1:T} = Backbone(g_{1:T})`` with ``g_t = MLP([z_{t-1}, a_{t-1}])``: a
  :class:`~mixerzoo.rl.backbone.MixerStack` of core residual blocks. ``mixer="s4d"`` is S4WM;
  ``"s5"`` the paper's S5 variant; ``"attention"`` (causal) a TSSM-like Transformer world model;
  ``"gru"`` an RSSM-like recurrent one — one config line each.
- **Prior** ``p(z_t | h_t)``, **decoder** ``p(x_t | h_t, z_t)`` (a transposed-convolution image
  decoder of the mean, unit-variance Gaussian), **reward head** ``p(r_t | h_t, z_t)`` (Gaussian).
- **Loss** (per step, averaged): reconstruction + reward negative log-likelihoods and a KL
  ``KL(q(z_t | x_t) || p(z_t | h_t))`` with **KL balancing** (DreamerV2, arXiv 2010.02193):
  ``alpha KL(sg(q) || p) + (1 - alpha) KL(q || sg(p))``, so the prior moves towards the posterior
  faster than the posterior towards the prior, and **free bits** (each term clipped from below at
  ``free_nats`` per step, DreamerV3's form, arXiv 2301.04104).
- **Imagination** (:meth:`S4WM.imagine`): the context frames are encoded and run through the
  backbone in parallel; then the backbone runs in recurrent mode (``step``), each new latent a
  sample of the prior and each frame the decoder's mean, for as many steps as asked.

What the paper leaves open here, and the choices made:

- Latents are ``n_latents`` categorical variables of ``n_classes`` classes (DreamerV2/V3's
  discrete latents, the representation of the RSSM and TSSM baselines the paper compares with),
  sampled with straight-through gradients and 1% uniform mixing of the probabilities (DreamerV3).
- Encoder/decoder: two stride-2 convolutions (and their transposes) with SiLU, sized for small
  images (height and width divisible by 4); the paper's 64 x 64 frames use deeper ones.
- Backbone blocks are pre-norm LayerNorm blocks with a GELU MLP of width ``d_ff`` and dropout
  (the S4 block of the S4 code base: SSM, GLU output, residual, norm, feed-forward).
- The first step of a sequence sees ``z_0 = 0`` and ``a_0 = 0``; a window cut from the middle of
  an episode starts from the backbone's ``init_state`` (as Dreamer trains on chunks).
- Attention backbones add sinusoidal absolute positions to ``g_t`` (``positional=None``: on for
  attention only), since causal attention alone has no notion of order.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.layers.sequence import check_reset
from mixerzoo.rl.backbone import MixerStack

__all__ = ["S4WM", "kl_balanced"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, d_out)
    )


def _categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` of independent categoricals ``[..., n_latents, n_classes]``, summed over the
    latents -> ``[...]``."""
    p_log = F.log_softmax(p_logits, -1)
    q_log = F.log_softmax(q_logits, -1)
    return (p_log.exp() * (p_log - q_log)).sum((-2, -1))


def kl_balanced(
    post_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    balance: float = 0.8,
    free_nats: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL balancing with free bits.

    ``balance * max(free, KL(sg(q) || p)) + (1 - balance) * max(free, KL(q || sg(p)))``, each KL
    per step (summed over the latents), clipped from below at ``free_nats`` per step, then
    averaged.

    Args:
        post_logits, prior_logits: ``[..., n_latents, n_classes]`` log-probabilities (logits of the
            already mixed probabilities).

    Returns:
        ``(loss, kl)``: the balanced, clipped loss and the plain mean ``KL(q || p)``.
    """
    dyn = _categorical_kl(post_logits.detach(), prior_logits)
    rep = _categorical_kl(post_logits, prior_logits.detach())
    loss = (
        balance * dyn.clamp(min=free_nats).mean() + (1 - balance) * rep.clamp(min=free_nats).mean()
    )
    return loss, dyn.detach().mean()


def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[T] -> [T, dim]`` sinusoidal position codes (Vaswani et al. 2017)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angle = positions.float().unsqueeze(-1) * freq
    code = torch.cat([angle.sin(), angle.cos()], -1)
    return F.pad(code, (0, dim - 2 * half))


class S4WM(nn.Module):
    """S4WM world model (see the module docstring).

    Args:
        image_shape: ``(C, H, W)`` of the frames (``H``, ``W`` divisible by 4).
        n_actions: size of the one-hot action.
        mixer: backbone mixer (``"s4d"``, ``"s5"``, ``"attention"``, ``"gru"``, ...).
        mixer_kwargs: its arguments (attention needs ``{"causal": True}``, set automatically).
        d_model: backbone width.
        n_layers: backbone blocks.
        d_ff: MLP width in each block (default ``2 * d_model``; 0: none).
        dropout: block dropout.
        n_latents: categorical latents per step.
        n_classes: classes per latent.
        hidden: width of the MLP heads.
        cnn_depth: channels of the first convolution.
        unimix: uniform mixing of the latent probabilities.
        kl_balance: ``alpha`` of KL balancing.
        free_nats: free bits per step.
        kl_scale: weight of the KL term.
        reward_scale: weight of the reward term.
        positional: sinusoidal positions on the backbone input (default: for attention only).
        context_len: attention cache limit (see :class:`~mixerzoo.rl.backbone.MixerStack`).

    Shapes:
        ``obs [B, T, C, H, W]`` in ``[0, 1]``; ``action [B, T, A]`` the one-hot previous action
        (zeros at a start); ``reward [B, T]``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 28, 28),
        n_actions: int = 4,
        mixer: str = "s4d",
        mixer_kwargs: dict[str, Any] | None = None,
        d_model: int = 256,
        n_layers: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.0,
        n_latents: int = 32,
        n_classes: int = 32,
        hidden: int = 256,
        cnn_depth: int = 32,
        unimix: float = 0.01,
        kl_balance: float = 0.8,
        free_nats: float = 1.0,
        kl_scale: float = 1.0,
        reward_scale: float = 1.0,
        positional: bool | None = None,
        context_len: int | None = None,
    ):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"S4WM: image height and width must be divisible by 4, got {h}x{w}")
        if not 0 <= unimix < 1 or not 0 <= kl_balance <= 1:
            raise ValueError(
                f"S4WM: need 0 <= unimix < 1 and 0 <= kl_balance <= 1, got {unimix}, {kl_balance}"
            )
        mixer_kwargs = dict(mixer_kwargs or {})
        if mixer == "attention":
            mixer_kwargs.setdefault("causal", True)
        self.image_shape = (c, h, w)
        self.n_actions = n_actions
        self.n_latents, self.n_classes = n_latents, n_classes
        self.z_dim = n_latents * n_classes
        self.unimix = unimix
        self.kl_balance, self.free_nats = kl_balance, free_nats
        self.kl_scale, self.reward_scale = kl_scale, reward_scale
        self.positional = mixer == "attention" if positional is None else positional
        self.d_model = d_model

        d = cnn_depth
        self._grid = (2 * d, h // 4, w // 4)
        flat = 2 * d * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, d, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(d, 2 * d, 4, 2, 1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.LayerNorm(hidden),
            nn.SiLU(),
            nn.Linear(hidden, self.z_dim),
        )
        self.input_mlp = _mlp(self.z_dim + n_actions, hidden, d_model)
        self.backbone = MixerStack(
            d_model,
            mixer,
            n_layers,
            mixer_kwargs,
            d_ff=2 * d_model if d_ff is None else d_ff,
            norm="layernorm",
            prenorm=True,
            dropout=dropout,
            context_len=context_len,
        )
        self.out_norm = nn.LayerNorm(d_model)
        self.prior_head = _mlp(d_model, hidden, self.z_dim)
        self.decoder_in = nn.Sequential(
            nn.Linear(d_model + self.z_dim, hidden),
            nn.LayerNorm(hidden),
            nn.SiLU(),
            nn.Linear(hidden, flat),
        )
        self.decoder = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(2 * d, d, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(d, c, 4, 2, 1),
        )
        self.reward_head = _mlp(d_model + self.z_dim, hidden, 1)

    # --- pieces ---------------------------------------------------------------------------
    def _mixed_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``[..., Z] -> [..., n_latents, n_classes]`` log-probabilities with uniform mixing."""
        logits = logits.unflatten(-1, (self.n_latents, self.n_classes))
        if self.unimix == 0:
            return F.log_softmax(logits, -1)
        probs = (1 - self.unimix) * logits.softmax(-1) + self.unimix / self.n_classes
        return probs.log()

    def posterior_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``q(z_t | x_t)`` for every frame: ``[B, T, C, H, W] -> [B, T, n_latents, n_classes]``."""
        self._check_obs(obs)
        b, t = obs.shape[:2]
        logits = self.encoder((obs - 0.5).flatten(0, 1)).view(b, t, -1)
        return self._mixed_logits(logits)

    def prior_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``p(z_t | h_t)``: ``[..., d_model] -> [..., n_latents, n_classes]``."""
        return self._mixed_logits(self.prior_head(h))

    def sample(self, logits: torch.Tensor, mode: bool = False) -> torch.Tensor:
        """One-hot latents ``[..., Z]`` (straight-through gradients; ``mode``: the argmax)."""
        if mode:
            index = logits.argmax(-1)
        else:
            index = torch.distributions.Categorical(logits=logits).sample()
        one_hot = F.one_hot(index, self.n_classes).to(logits.dtype)
        probs = logits.exp()
        return (one_hot + probs - probs.detach()).flatten(-2)

    def backbone_inputs(
        self, z_prev: torch.Tensor, action: torch.Tensor, offset: int = 0
    ) -> torch.Tensor:
        """``g = MLP([z_{t-1}, a_{t-1}])`` (+ positions ``offset, offset + 1, ...``)."""
        g = self.input_mlp(torch.cat([z_prev, action], -1))
        if self.positional:
            t = g.shape[-2] if g.dim() == 3 else 1
            code = _sinusoid(torch.arange(offset, offset + t, device=g.device), self.d_model)
            g = g + (code if g.dim() == 3 else code[0])
        return g

    def decode(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean frame ``[..., C, H, W]`` from ``h [..., d_model]`` and ``z [..., Z]``."""
        lead = h.shape[:-1]
        x = self.decoder_in(torch.cat([h, z], -1)).view(-1, *self._grid)
        return self.decoder(x).view(*lead, *self.image_shape)

    def predict_reward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat([h, z], -1)).squeeze(-1)

    def _check_obs(self, obs: torch.Tensor) -> None:
        if obs.dim() != 5 or tuple(obs.shape[2:]) != self.image_shape:
            raise ValueError(
                f"S4WM: obs must have shape [B, T, {', '.join(map(str, self.image_shape))}], got "
                f"{tuple(obs.shape)}"
            )

    def _check_action(self, action: torch.Tensor, obs: torch.Tensor) -> None:
        if tuple(action.shape) != (*obs.shape[:2], self.n_actions):
            raise ValueError(
                f"S4WM: action must be the one-hot previous action [B, T, {self.n_actions}] "
                f"matching obs {tuple(obs.shape[:2])}, got {tuple(action.shape)}"
            )

    # --- training: everything in parallel -------------------------------------------------
    def forward(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        state: Any = None,
        reset: torch.Tensor | None = None,
        sample: bool = True,
    ) -> dict[str, Any]:
        """Posterior, backbone, prior, decoder and reward over whole sequences at once.

        Args:
            obs: ``[B, T, C, H, W]``.
            action: ``[B, T, A]`` previous actions.
            state: backbone state to continue from (``None``: ``init_state``).
            reset: ``[B, T]`` bool, episode starts inside the sequences (the backbone state is
                dropped there and ``z_{t-1}`` is taken as zero).
            sample: sample the posterior (training) or take its mode.

        Returns:
            dict with ``post`` / ``prior`` logits ``[B, T, n_latents, n_classes]``, ``z``
            ``[B, T, Z]``, ``h`` ``[B, T, d_model]``, ``recon`` ``[B, T, C, H, W]``, ``reward``
            ``[B, T]`` and the backbone ``state`` after the last step.
        """
        self._check_action(action, obs)
        reset = check_reset(reset, obs, "S4WM.forward")
        post = self.posterior_logits(obs)
        z = self.sample(post, mode=not sample)
        z_prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        if reset is not None:
            z_prev = z_prev.masked_fill(reset.unsqueeze(-1), 0.0)
        h, state = self.backbone(self.backbone_inputs(z_prev, action), state, reset=reset)
        h = self.out_norm(h)
        return {
            "post": post,
            "prior": self.prior_logits(h),
            "z": z,
            "h": h,
            "recon": self.decode(h, z),
            "reward": self.predict_reward(h, z),
            "state": state,
        }

    def loss(
        self, batch: dict[str, torch.Tensor], reset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch (``obs``, ``action``, ``reward``) and its parts."""
        out = self(batch["obs"], batch["action"], reset=reset)
        recon = 0.5 * (out["recon"] - batch["obs"]).square().sum((-3, -2, -1)).mean()
        reward = 0.5 * (out["reward"] - batch["reward"]).square().mean()
        kl_loss, kl = kl_balanced(out["post"], out["prior"], self.kl_balance, self.free_nats)
        total = recon + self.reward_scale * reward + self.kl_scale * kl_loss
        mse = (out["recon"] - batch["obs"]).square().mean()
        return total, {"recon": recon.detach(), "reward": reward.detach(), "kl": kl, "mse": mse}

    # --- imagination: recurrent mode ------------------------------------------------------
    @torch.no_grad()
    def imagine(
        self,
        context_obs: torch.Tensor,
        context_action: torch.Tensor,
        future_action: torch.Tensor,
        sample: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode a context, then roll the prior forward step by step.

        Args:
            context_obs: ``[B, C, ...]`` the context frames ``x_1..x_C``.
            context_action: ``[B, C, A]`` their previous actions.
            future_action: ``[B, H, A]`` the previous actions of the imagined frames
                (``a_C .. a_{C+H-1}``).
            sample: sample the prior (True, the paper's imagination) or take its mode.

        Returns:
            ``frames [B, H, C, H, W]`` (decoder means), ``reward [B, H]``, ``z [B, H, Z]``.
        """
        self._check_action(context_action, context_obs)
        out = self(context_obs, context_action, sample=False)
        state, z_prev = out["state"], out["z"][:, -1]
        context = context_obs.shape[1]
        frames, rewards, latents = [], [], []
        for k in range(future_action.shape[1]):
            g = self.backbone_inputs(z_prev, future_action[:, k], offset=context + k)
            h, state = self.backbone.step(g, state)
            h = self.out_norm(h)
            z_prev = self.sample(self.prior_logits(h), mode=not sample)
            frames.append(self.decode(h, z_prev))
            rewards.append(self.predict_reward(h, z_prev))
            latents.append(z_prev)
        return {
            "frames": torch.stack(frames, 1),
            "reward": torch.stack(rewards, 1),
            "z": torch.stack(latents, 1),
        }
