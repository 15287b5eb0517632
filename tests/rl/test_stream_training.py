"""Training on a stream with resets equals training on its episodes separately (outputs and
gradients), acting step by step equals the parallel forward, and the bad inputs of resets."""

import pytest
import torch

from mixerzoo.core.state import map_state
from mixerzoo.core.testing import assert_close
from mixerzoo.rl.backbone import MixerStack
from mixerzoo.rl.icrl.agent import ActorCritic
from mixerzoo.rl.spaces import ActionSpec

BACKBONES = {
    "s5": {"d_state": 8, "activation": "full_glu"},
    "s4d": {"d_state": 8},
    "gru": {},
    "lstm": {},
    "attention": {"causal": True, "n_heads": 2},
}


def _agent(mixer: str, n_layers: int = 2) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(
        obs_size=5,
        action=ActionSpec("discrete", sizes=(3,)),
        mixer=mixer,
        d_model=16,
        n_layers=n_layers,
        mixer_kwargs=BACKBONES[mixer],
        encoder_hidden=8,
        head_hidden=8,
    ).double()


def _objective(out, actions) -> torch.Tensor:
    """A PPO-shaped scalar: log-probabilities of the actions and squared values."""
    return out.log_prob(actions).sum() + out.value.square().sum()


@pytest.mark.parametrize("mixer", sorted(BACKBONES))
def test_stream_with_resets_equals_separate_episodes(mixer):
    agent = _agent(mixer)
    b, t = 2, 17
    obs = torch.randn(b, t, 5, dtype=torch.float64)
    actions = torch.randint(3, (b, t, 1))
    reset = torch.zeros(b, t, dtype=torch.bool)
    reset[0, [5, 11]] = True
    reset[1, [1, 16]] = True
    # The stream starts from a carried state (the end of a previous rollout).
    with torch.no_grad():
        _, carried = agent(torch.randn(b, 6, 5, dtype=torch.float64))

    agent.zero_grad()
    out, _ = agent(obs, carried, reset=reset)
    _objective(out, actions).backward()
    stream_logits, stream_values = out.head.detach(), out.value.detach()
    stream_grads = {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}

    agent.zero_grad()
    total = 0.0
    logits, values = torch.empty_like(stream_logits), torch.empty_like(stream_values)
    for row in range(b):
        starts = [0, *reset[row].nonzero().flatten().tolist(), t]
        for k, (s, e) in enumerate(zip(starts[:-1], starts[1:])):
            # The first piece continues the carried state; every other episode starts afresh.
            state = None
            if k == 0:
                state = map_state(lambda leaf, r=row: leaf[r : r + 1], carried)
            piece, _ = agent(obs[row : row + 1, s:e], state)
            total = total + _objective(piece, actions[row : row + 1, s:e])
            logits[row, s:e], values[row, s:e] = piece.head[0].detach(), piece.value[0].detach()
    total.backward()
    assert_close(stream_logits, logits, msg=f"{mixer} logits")
    assert_close(stream_values, values, msg=f"{mixer} values")
    for name, grad in stream_grads.items():
        assert_close(grad, dict(agent.named_parameters())[name].grad, msg=f"{mixer} grad {name}")


@pytest.mark.parametrize("mixer", sorted(BACKBONES))
def test_acting_step_by_step_equals_the_parallel_forward(mixer):
    agent = _agent(mixer)
    b, t = 3, 13
    obs = torch.randn(b, t, 5, dtype=torch.float64)
    reset = torch.rand(b, t) < 0.2
    reset[:, 0] = True
    with torch.no_grad():
        out, final = agent(obs, None, reset=reset)
        state = None
        for i in range(t):
            step, state = agent.step(obs[:, i], state, reset[:, i])
            assert_close(step.head, out.head[:, i], msg=f"{mixer} step {i}")
            assert_close(step.value, out.value[:, i], msg=f"{mixer} value {i}")
    # Continuing from the state of either form gives the same next output.
    nxt = torch.randn(b, 5, dtype=torch.float64)
    with torch.no_grad():
        a, _ = agent.step(nxt, state)
        c, _ = agent.step(nxt, final)
    assert_close(a.head, c.head)


def test_memoryless_stack_is_identity_without_state():
    stack = MixerStack(8, "none")
    x = torch.randn(2, 5, 8)
    y, state = stack(x)
    assert y is x and state is None and stack.init_state(2) is None


def test_non_causal_backbone_is_refused():
    with pytest.raises(ValueError, match="not causal"):
        MixerStack(8, "attention", mixer_kwargs={"causal": False})


@pytest.mark.parametrize("mixer", ["s5", "gru"])
def test_reset_mask_of_wrong_dtype_or_shape(mixer):
    agent = _agent(mixer, n_layers=1)
    obs = torch.randn(2, 6, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="reset must be a torch.bool tensor"):
        agent(obs, reset=torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"reset must have shape \[B, T\]"):
        agent(obs, reset=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"obs must have shape \[B, T, F\] with F = 5"):
        agent(torch.randn(2, 6, 4))


def test_attention_cache_trimmed_to_the_context_is_exact_within_it():
    """With episodes no longer than ``context_len``, trimming the carried attention cache changes
    nothing (keys of earlier episodes are never attended to), and longer episodes are refused."""
    torch.manual_seed(0)
    full = MixerStack(8, "attention", 1, {"causal": True, "n_heads": 2}).double()
    trimmed = MixerStack(8, "attention", 1, {"causal": True, "n_heads": 2}, context_len=4).double()
    trimmed.load_state_dict(full.state_dict())
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    reset = torch.zeros(2, 20, dtype=torch.bool)
    reset[:, ::4] = True  # episodes of 4 steps
    s_full = s_trim = None
    with torch.no_grad():
        for i in range(20):
            y_full, s_full = full.step(x[:, i], s_full, reset[:, i])
            y_trim, s_trim = trimmed.step(x[:, i], s_trim, reset[:, i])
            assert_close(y_trim, y_full)
            assert s_trim[0]["k"].shape[2] <= 4
    from mixerzoo.rl.backbone import ContextTooLongError

    with pytest.raises(ContextTooLongError, match="longer than the configured context"):
        trimmed.check_episode_length(5, "test")
