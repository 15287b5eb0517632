"""iTransformer and S-Mamba take any registered mixer that can mix variate tokens: each is trained
for a few steps with every compatible mixer, enumerated from the registry.

Variate tokens have no order, so the mixer must let every token see every other: a mixer is
compatible when it declares itself bidirectional (``causal`` False), as built by default or with
``causal=False`` (the attention, retention and gated-CNN options), and this is checked on its
outputs. A causal-only mixer cannot serve (each variate would see only the variates listed before
it), nor can one that is bidirectional only across a grid's second axis (``ONE_WAY_ON_A_SEQUENCE``,
with the reason). Each reason is tested on the mixer's outputs, so no mixer is left out silently.
"""

import pytest
import pytorch_lightning as pl
import torch

from mixerzoo.core import create_mixer, list_mixers
from mixerzoo.timeseries import ForecastDataModule, ForecastTask
from mixerzoo.timeseries.models import ITransformer, SMamba

D = 16


def _variate_mixer_kwargs(name: str) -> dict | None:
    """Arguments that make mixer ``name`` bidirectional, or None when it is causal only."""
    if not create_mixer(name, d_model=D).causal:
        return {}
    try:
        mixer = create_mixer(name, d_model=D, causal=False)
    except TypeError:  # no causal option
        return None
    return {"causal": False} if not mixer.causal else None


# Mixers that declare causal=False but see a plain [B, T, D] sequence one way only.
ONE_WAY_ON_A_SEQUENCE = {
    "ssm2d": "Chimera's 2-D SSM is bidirectional across the variates of a (time, variate) grid, "
    "but a [B, T, D] sequence is its time axis, scanned forward only",
}

COMPATIBLE, LEFT_OUT = {}, {}
for _name in list_mixers():
    _kwargs = _variate_mixer_kwargs(_name)
    if _kwargs is None:
        LEFT_OUT[_name] = "causal only: each variate would see only the variates before it"
    elif _name in ONE_WAY_ON_A_SEQUENCE:
        LEFT_OUT[_name] = ONE_WAY_ON_A_SEQUENCE[_name]
    else:
        COMPATIBLE[_name] = _kwargs


def _sees(name: str, kwargs: dict) -> tuple[bool, bool]:
    """Whether token 0's output depends on later tokens, and the last's on earlier ones."""
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model=D, **kwargs).double().eval()
    x = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    y, _ = mixer(x)
    (first,) = torch.autograd.grad(y[:, 0].sum(), x, retain_graph=True)
    (last,) = torch.autograd.grad(y[:, -1].sum(), x)
    # Relative to the token's own gradient: FFT convolutions leave ~1e-18 where exact maths is 0.
    later = first[:, 1:].abs().max() > 1e-9 * first[:, 0].abs().max()
    earlier = last[:, :-1].abs().max() > 1e-9 * last[:, -1].abs().max()
    return bool(later), bool(earlier)


def test_the_enumeration_finds_both_kinds():
    assert {"attention", "bimamba"} <= set(COMPATIBLE) and "mamba" in LEFT_OUT
    assert COMPATIBLE["attention"] == {} and COMPATIBLE.keys() | LEFT_OUT.keys() == set(
        list_mixers()
    )


@pytest.mark.parametrize("name", sorted(LEFT_OUT))
def test_a_left_out_mixer_sees_a_sequence_one_way(name):
    """The reason a mixer cannot mix variate tokens: token 0's output ignores the later tokens."""
    later, earlier = _sees(name, {})
    assert not later and earlier, LEFT_OUT[name]


def _fit_a_few_steps(model: torch.nn.Module, csv) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    dm = ForecastDataModule(str(csv), seq_len=24, label_len=12, pred_len=6, batch_size=8)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    task = ForecastTask(model, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    trainer = pl.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    return before


@pytest.mark.parametrize("family", [ITransformer, SMamba], ids=["itransformer", "s_mamba"])
@pytest.mark.parametrize("name", sorted(COMPATIBLE))
def test_trains_a_few_steps_with_every_compatible_mixer(family, name, small_csv):
    kwargs = dict(COMPATIBLE[name])
    if name == "attention":
        kwargs["n_heads"] = 2
    model = family(
        seq_len=24, pred_len=6, d_model=D, d_ff=D, e_layers=1, mixer=name, mixer_kwargs=kwargs
    )
    assert _sees(name, COMPATIBLE[name]) == (True, True)
    assert all(type(block.mixer) is type(create_mixer(name, D, **kwargs)) for block in model.blocks)
    before = _fit_a_few_steps(model, small_csv)
    # The mixer is in the graph: its weights moved (Adam moves every parameter with a gradient).
    mixer_params = [k for k in before if ".mixer." in k]
    assert mixer_params
    assert all(not torch.equal(before[k], dict(model.named_parameters())[k]) for k in mixer_params)
    assert model(torch.randn(2, 24, 4)).shape == (2, 6, 4)
