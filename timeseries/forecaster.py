"""A scikit-learn style forecaster over pandas frames: ``fit``, ``predict``, ``score``, ``backtest``.

``Forecaster`` is a thin driver of the same pieces as the ``mixerzoo`` CLI: the model is built by
name from the registry (``create_model``), trained through ``ForecastTask`` (MSE on standardised
values, Adam, early stopping on the validation loss) by a Lightning ``Trainer`` built as the CLI
builds it (``core.cli.instantiate_trainer`` from the forecasting defaults of
``timeseries.cli.trainer_defaults``), on the windows of ``ForecastDataModule.from_frame``
(Time-Series-Library's windows and time features; the scaler fit on the training rows only).
Nothing here re-implements a model, the data or the training loop.

Example::

    from mixerzoo.timeseries import Forecaster

    f = Forecaster("itransformer", lookback=96, horizon=24, max_epochs=10, d_model=128)
    f.fit(df)                      # wide (DatetimeIndex, a column per series) or long (unique_id, ds, y)
    future = f.predict()           # the 24 steps after the end of df, in the layout of df
    f.score(holdout_df)            # negative MSE (standardised units): higher is better
    f.backtest(df, n_windows=4)    # rolling-origin evaluation, one row per window
    f.save("f.pt"); Forecaster.load("f.pt").predict()
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from torch import nn
from torch.utils.data import DataLoader, Subset

from mixerzoo.core.cli import MixerzooCLI, instantiate_trainer
from mixerzoo.core.registry import create_model, get_model_class, list_models
from mixerzoo.timeseries.cli import trainer_defaults
from mixerzoo.timeseries.data import (
    DataError,
    ForecastDataModule,
    FrameInfo,
    StandardScaler,
    prepare_frame,
)
from mixerzoo.timeseries.task import ForecastTask

__all__ = ["Forecaster"]

_FORMAT = "mixerzoo.timeseries.Forecaster"
# Version 2: the scaler as StandardScaler.state_dict (the data module's checkpoint format).
_VERSION = 2
# What load needs from a saved file (see save).
_SAVED_KEYS = frozenset(
    "params state_dict scaler columns freq layout date_name last_dates date_unit tz last_values "
    "best_val_loss n_epochs".split()
)
# Arguments the Forecaster sets from its own parameters, never through model kwargs.
_OWN_MODEL_ARGS = {"seq_len": "lookback", "pred_len": "horizon", "label_len": "label_len"}
# Constructor arguments some forecasters take for the number of variables (Time-Series-Library
# names) and for the data frequency (it fixes their number of time-feature channels); filled in
# from the data when the model has them and the user did not set them.
_N_VARS_ARGS = ("enc_in", "dec_in", "c_out", "n_vars")
# Lightning's advice that does not apply to small in-memory frames.
_NOISE = (
    r".*does not have many workers.*",
    r".*number of training batches .* is smaller than the logging interval.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    r".*`training_step` returned `None`.*",
    # Lightning 2.6 with torch 2.11 (pytorch_lightning/utilities/_pytree.py), not ours to fix.
    r".*LeafSpec.*",
)


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Iterator[None]:
    """Silence Lightning's advice warnings, and with ``quiet`` its info lines (GPU available...)."""
    loggers = [
        logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")
    ]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            if quiet:
                for lg in loggers:
                    lg.setLevel(logging.WARNING)
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _check_savable(name: str, value: Any) -> None:
    # torch.load(weights_only=True) restores only plain containers, numbers, strings and tensors.
    if isinstance(value, dict):
        for k, v in value.items():
            _check_savable(f"{name}[{k!r}]", k)
            _check_savable(f"{name}[{k!r}]", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_savable(f"{name}[{i}]", v)
    elif not (value is None or isinstance(value, (bool, int, float, str, torch.Tensor))):
        raise TypeError(
            f"cannot save {name} of type {type(value).__name__}: save/load keeps only None, bool, "
            f"int, float, str, lists, tuples and dicts of them (and tensors)"
        )


class Forecaster(BaseEstimator):
    """Train and use any registered forecasting model on pandas frames, scikit-learn style.

    Every series of the frame is one variable of a single multivariate model (iTransformer
    attends across them); all series must share one regular time grid (see ``prepare_frame``).
    Training is seeded with ``seed``, and so is the inference of models that sample (Informer's
    ProbSparse attention), in a local generator: the same inputs always give the same forecast.

    Args:
        model: registered model name (``mixerzoo.core.list_models("timeseries")``).
        lookback: input length ``L`` (the model's ``seq_len``).
        horizon: forecast length ``H`` (the model's ``pred_len``).
        model_kwargs: model constructor arguments (``d_model``, ``e_layers``, ``mixer``, ...).
        label_len: decoder start-token length for encoder-decoder models; ``None``: ``L // 2``.
        max_epochs: most training epochs.
        batch_size: windows per batch.
        lr: Adam learning rate.
        patience: epochs without a better validation loss before stopping.
        val_fraction: share of the timestamps held out at the end for validation, early
            stopping and the choice of the best epoch's weights; 0 trains on everything for
            ``max_epochs`` epochs.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        seed: seed of weights and batch order (``pytorch_lightning.seed_everything``).
        progress_bar: show the training progress bar and Lightning's messages.
        freq: pandas frequency alias of the data; ``None`` infers it.
        fill: ``None`` makes gaps and NaNs errors; ``"ffill"``, ``"interpolate"`` or ``"zero"``
            resample onto the regular grid and fill them.
        timeenc: time features: 1 scaled calendar fields ("timeF"), 0 integer fields.
        feature_freq: frequency the time features are computed at; ``None``: the data's step.
            (Time-Series-Library's configs use ``"h"`` for every dataset; ``from_checkpoint``
            takes it from the run's data module.)
        date_column: timestamp column of wide frames (else their ``DatetimeIndex``).
        id_column: series id column of long frames.
        time_column: timestamp column of long frames.
        value_column: value column of long frames.
        **extra_model_kwargs: more model arguments, passed like ``model_kwargs`` (kept by
            ``get_params``/``set_params``/``clone``).

    Fitted attributes: ``model_`` (the trained ``nn.Module``), ``scaler_``, ``columns_``,
    ``freq_``, ``layout_``, ``date_name_``, ``last_dates_`` and ``last_values_`` (the last ``L``
    timestamps and raw values of the training frame, what ``predict()`` continues),
    ``best_val_loss_`` and ``n_epochs_``.
    """

    def __init__(
        self,
        model: str = "itransformer",
        lookback: int = 96,
        horizon: int = 24,
        model_kwargs: dict[str, Any] | None = None,
        label_len: int | None = None,
        max_epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-4,
        patience: int = 3,
        val_fraction: float = 0.2,
        accelerator: str = "auto",
        seed: int = 2021,
        progress_bar: bool = True,
        freq: str | None = None,
        fill: str | None = None,
        timeenc: int = 1,
        feature_freq: str | None = None,
        date_column: str = "date",
        id_column: str = "unique_id",
        time_column: str = "ds",
        value_column: str = "y",
        **extra_model_kwargs: Any,
    ):
        # scikit-learn's rule: store the parameters unchanged, validate them in fit.
        self.model = model
        self.lookback = lookback
        self.horizon = horizon
        self.model_kwargs = model_kwargs
        self.label_len = label_len
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.accelerator = accelerator
        self.seed = seed
        self.progress_bar = progress_bar
        self.freq = freq
        self.fill = fill
        self.timeenc = timeenc
        self.feature_freq = feature_freq
        self.date_column = date_column
        self.id_column = id_column
        self.time_column = time_column
        self.value_column = value_column
        self._extra_model_kwargs = dict(extra_model_kwargs)

    # --- scikit-learn parameter protocol --------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, ``**extra_model_kwargs`` included (so ``clone`` keeps them)."""
        params = super().get_params(deep=deep)
        params.update(self._extra_model_kwargs)
        return params

    def set_params(self, **params: Any) -> Forecaster:
        """Set parameters; a name that is not a Forecaster parameter must be an argument of the
        model's constructor and becomes an extra model kwarg."""
        own = set(self._get_param_names())
        extra = {k: params.pop(k) for k in list(params) if k not in own}
        super().set_params(**params)
        if extra:
            valid = self._model_arg_names()
            unknown = [k for k in extra if k not in valid or k in _OWN_MODEL_ARGS]
            if unknown:
                raise ValueError(
                    f"invalid parameters {unknown} for Forecaster(model={self.model!r}); "
                    f"Forecaster parameters: {sorted(own)}; model arguments: "
                    f"{sorted(valid - set(_OWN_MODEL_ARGS))}"
                )
            self._extra_model_kwargs.update(extra)
        return self

    def _model_arg_names(self) -> set[str]:
        builder = get_model_class(self.model)
        target = builder.__init__ if inspect.isclass(builder) else builder
        return {n for n in inspect.signature(target).parameters if n not in ("self", "kwargs")}

    # --- validation -----------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("lookback", "horizon", "max_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.patience, (int, np.integer)) or self.patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {self.patience!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.label_len is not None and not 0 <= self.label_len <= self.lookback:
            raise ValueError(
                f"label_len must be in [0, lookback={self.lookback}], got {self.label_len}"
            )

    def _resolved_model_kwargs(self, n_vars: int, freq: str) -> dict[str, Any]:
        given = dict(self.model_kwargs or {})
        both = sorted(set(given) & set(self._extra_model_kwargs))
        if both:
            raise ValueError(f"model arguments {both} given both in model_kwargs and as keywords")
        given.update(self._extra_model_kwargs)
        own = [k for k in given if k in _OWN_MODEL_ARGS]
        if own:
            use = ", ".join(f"{k} -> {_OWN_MODEL_ARGS[k]}=" for k in own)
            raise ValueError(f"set these through the Forecaster, not the model kwargs: {use}")
        valid = self._model_arg_names()
        unknown = sorted(set(given) - valid)
        if unknown:
            raise ValueError(
                f"model {self.model!r} has no arguments {unknown}; its arguments are "
                f"{sorted(valid - set(_OWN_MODEL_ARGS))}"
            )
        kwargs = {"seq_len": self.lookback, "pred_len": self.horizon, **given}
        if "label_len" in valid:
            kwargs["label_len"] = self._label_len()
        for name in _N_VARS_ARGS:
            if name in valid and name not in kwargs:
                kwargs[name] = n_vars
        if "freq" in valid and "freq" not in kwargs:
            kwargs["freq"] = freq
        return kwargs

    def _label_len(self) -> int:
        return self.lookback // 2 if self.label_len is None else self.label_len

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "this Forecaster is not fitted yet; call fit(df) first (or Forecaster.load(path))"
            )

    # --- data -----------------------------------------------------------------------------
    def _frame_kwargs(self) -> dict[str, Any]:
        return {
            "date_column": self.date_column,
            "id_column": self.id_column,
            "time_column": self.time_column,
            "value_column": self.value_column,
            "fill": self.fill,
        }

    def _datamodule(self, df: pd.DataFrame, fitted: bool, **kwargs: Any) -> ForecastDataModule:
        """``ForecastDataModule.from_frame`` with this forecaster's windows; ``fitted`` binds it to
        the trained series, frequency and scaler."""
        if fitted:
            bound = {
                "columns": self.columns_,
                "scaler": self.scaler_,
                "freq": self.freq_,
                "freq_from": "model",
            }
        else:
            bound = {"freq": self.freq}
        return ForecastDataModule.from_frame(
            df,
            **self._frame_kwargs(),
            seq_len=self.lookback,
            label_len=self._label_len(),
            pred_len=self.horizon,
            timeenc=self.timeenc,
            feature_freq=self.feature_freq,
            batch_size=self.batch_size,
            **bound,
            **kwargs,
        )

    def _wide(self, df: pd.DataFrame) -> tuple[pd.DataFrame, FrameInfo]:
        return prepare_frame(df, **self._frame_kwargs(), freq=self.freq)

    # --- training -------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, y: None = None) -> Forecaster:
        """Train on a frame: the last ``val_fraction`` of its timestamps validate (early stopping,
        best epoch), the rest train; the scaler is fit on the training part.

        Args:
            df: wide or long frame (see the class docstring).
            y: ignored (scikit-learn signature).

        Returns:
            self.

        Raises:
            DataError: a frame that cannot be used or is too short for the windows.
            ValueError: bad parameters or model arguments.
        """
        self._check_params()
        n_val_min = self.horizon if self.val_fraction > 0 else 0
        dm = self._datamodule(
            df,
            fitted=False,
            protocol="ratio",
            train_fraction=1.0 - self.val_fraction,
            test_fraction=0.0,
        )
        frame = dm.load_frame()
        n = len(frame)
        n_train = int(n * (1.0 - self.val_fraction))
        if n_train < self.lookback + self.horizon:
            raise DataError(
                f"the series have {n} timestamps; training on the first {n_train} "
                f"(val_fraction={self.val_fraction}) leaves fewer than lookback {self.lookback} + "
                f"horizon {self.horizon} = {self.lookback + self.horizon}; use shorter windows, a "
                f"smaller val_fraction, or more data"
            )
        if n - n_train < n_val_min:
            raise DataError(
                f"the validation tail has {n - n_train} timestamps (val_fraction="
                f"{self.val_fraction} of {n}), fewer than the horizon {self.horizon}; raise "
                f"val_fraction, or set val_fraction=0 to train without validation"
            )
        pl.seed_everything(self.seed, verbose=False)
        dm.setup("fit")
        net = create_model(self.model, **self._resolved_model_kwargs(dm.n_features, dm.freq))
        task = ForecastTask(
            net, optimizer=functools.partial(torch.optim.Adam, lr=self.lr, fused=True)
        )
        has_val = "val" in dm.splits
        with tempfile.TemporaryDirectory() as tmp, _quiet_lightning(not self.progress_bar):
            settings = trainer_defaults(
                patience=self.patience,
                max_epochs=self.max_epochs,
                validation=has_val,
                checkpoint={"dirpath": tmp, "save_last": False, "save_weights_only": True},
                writer=False,
            )
            trainer = instantiate_trainer(
                {
                    **settings,
                    "accelerator": self.accelerator,
                    "logger": False,
                    "enable_checkpointing": has_val,
                    "enable_progress_bar": self.progress_bar,
                    "enable_model_summary": False,
                    "num_sanity_val_steps": 0,
                    "limit_val_batches": 1.0 if has_val else 0,
                    "default_root_dir": tmp,
                }
            )
            trainer.fit(task, datamodule=dm)
            self.best_val_loss_ = None
            best = trainer.checkpoint_callback if has_val else None
            if best is not None and best.best_model_path:
                state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
                task.load_state_dict(state["state_dict"])
                self.best_val_loss_ = float(best.best_model_score)
        self.model_ = task.model.cpu().eval()
        self.n_epochs_ = int(trainer.current_epoch)
        self.scaler_ = StandardScaler.from_state_dict(dm.scaler.state_dict())
        info = dm.frame_info
        self.columns_ = list(info.columns)
        self.freq_ = info.freq
        self.layout_ = info.layout
        self.date_name_ = info.date_name
        tail = frame.iloc[n - self.lookback :]
        self.last_dates_ = pd.DatetimeIndex(tail[self.date_column])
        self.last_values_ = tail[self.columns_].to_numpy(dtype=np.float64)
        return self

    # --- inference ------------------------------------------------------------------------
    def _run(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray | None]:
        """Forecasts and targets ``[N, H, C]`` (standardised) of every window of ``loader``, via
        ``ForecastTask.predict_step`` (targets ``None`` for a window past the end of the data)."""
        task = ForecastTask(self.model_)
        # Models that sample at inference (Informer's ProbSparse attention) draw from a generator
        # seeded with `seed`, so that a prediction is reproducible (also after save/load) without
        # touching the caller's random state.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with _quiet_lightning(True), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            trainer = instantiate_trainer(
                {
                    **trainer_defaults(validation=False, writer=False),
                    "accelerator": self.accelerator,
                    "logger": False,
                    "enable_checkpointing": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "default_root_dir": tempfile.gettempdir(),
                }
            )
            outputs = trainer.predict(task, dataloaders=loader)
        # Lightning moved the model to its device; keep the fitted model on the CPU.
        self.model_.cpu().eval()
        pred = torch.cat([o["pred"] for o in outputs]).double().cpu().numpy()
        if "true" not in outputs[0]:  # windows past the end of the data have no truth
            return pred, None
        true = torch.cat([o["true"] for o in outputs]).double().cpu().numpy()
        return pred, true

    def _history(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.last_values_, columns=self.columns_)
        frame.insert(0, self.date_column, self.last_dates_)
        return frame

    def predict(self, df: pd.DataFrame | None = None, horizon: int | None = None) -> pd.DataFrame:
        """Forecast the steps after the end of ``df`` (default: of the training frame).

        Args:
            df: history of the same series (at least ``lookback`` timestamps, the trained
                frequency); only its last ``lookback`` rows are used.
            horizon: steps to return, at most the trained ``horizon`` (the first ones of the
                model's forecast); ``None`` returns all.

        Returns:
            Original units. A wide ``df`` (or training frame) gives a frame indexed by the future
            timestamps with one column per series; a long one gives rows ``id_column,
            time_column, "y_hat"`` sorted by series then time.

        Raises:
            NotFittedError: before ``fit``.
            DataError: unknown or missing series, another frequency, too short a history.
            ValueError: ``horizon`` larger than the trained one.
        """
        self._check_fitted()
        steps = self.horizon if horizon is None else horizon
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps <= 0:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if steps > self.horizon:
            raise ValueError(
                f"this Forecaster was trained for horizon {self.horizon} and cannot forecast "
                f"{steps} steps; refit with horizon={steps} (or ask for at most {self.horizon})"
            )
        source = self._history() if df is None else df
        dm = self._datamodule(source, fitted=True, protocol="none", predict_split="future")
        pred, _ = self._run(dm.predict_dataloader())
        values = self.scaler_.inverse_transform(pred[0])[:steps]
        dates = dm.dates["future"][:steps]
        layout = self.layout_ if df is None else dm.frame_info.layout
        date_name = self.date_name_ if df is None else dm.frame_info.date_name
        return self._format(values, dates, layout, date_name)

    def _format(
        self, values: np.ndarray, dates: pd.DatetimeIndex, layout: str, date_name: Hashable | None
    ) -> pd.DataFrame:
        if layout == "wide":
            index = pd.DatetimeIndex(dates, name=date_name)
            return pd.DataFrame(values, index=index, columns=pd.Index(self.columns_))
        n_steps, n_series = values.shape
        return pd.DataFrame(
            {
                self.id_column: pd.Index(self.columns_).repeat(n_steps),
                self.time_column: np.tile(dates, n_series),
                "y_hat": values.T.reshape(-1),
            }
        )

    def score(self, df: pd.DataFrame, y: None = None) -> float:
        """Negative mean squared error over every window of ``df`` (higher is better).

        Every stride-1 window of ``df`` (``lookback`` rows in, the next ``horizon`` rows to
        forecast) is scored, averaging over windows, steps and series, on values standardised
        with the training statistics: Time-Series-Library's test MSE, negated to follow
        scikit-learn's "greater is better" convention (``GridSearchCV`` maximises it).

        Args:
            df: frame of the trained series, at least ``lookback + horizon`` timestamps.
            y: ignored (scikit-learn signature).
        """
        self._check_fitted()
        dm = self._datamodule(df, fitted=True, protocol="all")
        pred, true = self._run(dm.test_dataloader())
        return -float(np.mean((pred - true) ** 2))

    def backtest(
        self, df: pd.DataFrame, n_windows: int = 3, step: int | None = None, refit: bool = False
    ) -> pd.DataFrame:
        """Rolling-origin evaluation: forecast ``n_windows`` times from successive cutoffs.

        The last window's forecast ends at the last timestamp of ``df``; each earlier cutoff is
        ``step`` (default ``horizon``) timestamps before the next. A fresh copy of this
        forecaster (``sklearn.base.clone``, same parameters and seed) is trained on the data up
        to the first cutoff (``refit=False``) or, for each window, up to its own cutoff
        (``refit=True``), so no forecast has seen its targets; ``self`` is left unchanged.

        Args:
            df: the full frame.
            n_windows: number of forecast origins.
            step: timestamps between consecutive cutoffs.
            refit: train again at every cutoff.

        Returns:
            One row per window: ``window``, ``cutoff`` (last timestamp seen), ``mse``, ``mae``
            (original units, averaged over steps and series) and ``mse_scaled``, ``mae_scaled``
            (standardised with the statistics of that model's training rows).
        """
        self._check_params()
        step = self.horizon if step is None else step
        for name, value in (("n_windows", n_windows), ("step", step)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        wide, _ = self._wide(df)
        n = len(wide)
        dates = pd.DatetimeIndex(wide[self.date_column])
        cutoffs = [n - self.horizon - 1 - (n_windows - 1 - k) * step for k in range(n_windows)]
        if cutoffs[0] < 0:
            raise DataError(
                f"{n_windows} windows {step} steps apart with horizon {self.horizon} need more "
                f"than the {n} timestamps of the frame; use fewer windows or a smaller step"
            )
        rows = []
        model = None
        for k, cut in enumerate(cutoffs):
            if model is None or refit:
                model = clone(self)
                try:
                    model.fit(wide.iloc[: cut + 1])
                except DataError as err:
                    raise DataError(
                        f"backtest window {k} (cutoff {dates[cut]}): too little history before "
                        f"the cutoff to train on ({err}); use fewer windows or a smaller step"
                    ) from None
            dm = model._datamodule(wide, fitted=True, protocol="all")
            dm.setup("test")
            # Window i of the whole-frame split has lookback rows [i, i + L): it ends at the cutoff.
            window = Subset(dm.splits["test"], [cut + 1 - self.lookback])
            pred, true = model._run(DataLoader(window, batch_size=1))
            pred_orig, true_orig = (
                model.scaler_.inverse_transform(pred),
                model.scaler_.inverse_transform(true),
            )
            rows.append(
                {
                    "window": k,
                    "cutoff": dates[cut],
                    "mse": float(np.mean((pred_orig - true_orig) ** 2)),
                    "mae": float(np.mean(np.abs(pred_orig - true_orig))),
                    "mse_scaled": float(np.mean((pred - true) ** 2)),
                    "mae_scaled": float(np.mean(np.abs(pred - true))),
                }
            )
        return pd.DataFrame(rows)

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write parameters, weights, scaler, series, frequency and the last ``lookback``
        timestamps and values to one file (``torch.save``; reloaded with ``weights_only=True``).

        Raises:
            NotFittedError: before ``fit``.
            TypeError: a parameter or series name that is not a plain Python value.
        """
        self._check_fitted()
        params = self.get_params(deep=False)
        _check_savable("parameter", params)
        _check_savable("series names", self.columns_)
        _check_savable("date name", self.date_name_)
        dates = self.last_dates_
        state = {
            "format": _FORMAT,
            "version": _VERSION,
            "params": params,
            "state_dict": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "scaler": self.scaler_.state_dict(),
            "columns": list(self.columns_),
            "freq": self.freq_,
            "layout": self.layout_,
            "date_name": self.date_name_,
            "last_dates": torch.tensor(np.array(dates.asi8)),
            "date_unit": dates.unit,
            "tz": None if dates.tz is None else str(dates.tz),
            "last_values": torch.tensor(np.array(self.last_values_, dtype=np.float64)),
            "best_val_loss": self.best_val_loss_,
            "n_epochs": self.n_epochs_,
        }
        torch.save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Forecaster:
        """Rebuild a forecaster written by ``save``; it predicts exactly as the saved one.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: a file that ``save`` did not write, or a truncated or corrupted one; the
                message names the file and what was expected.
        """
        expected = (
            f"expected a file written by Forecaster.save (a torch.save archive of a dict with "
            f"format {_FORMAT!r}, version {_VERSION})"
        )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # torch reports a damaged archive in many ways
            raise ValueError(
                f"{path}: cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}); "
                f"{expected}. The file is truncated or corrupted: save the forecaster again."
            ) from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a file written by Forecaster.save; {expected}")
        if state.get("version") != _VERSION:
            raise ValueError(
                f"{path} was written by another version of Forecaster.save (format version "
                f"{state.get('version')}, this one reads {_VERSION}); fit and save it again"
            )
        missing = sorted(_SAVED_KEYS - set(state))
        if missing:
            raise ValueError(f"{path}: the saved forecaster lacks {missing}; {expected}")
        self = cls(**state["params"])
        columns = state["columns"]
        net: nn.Module = create_model(
            self.model,
            **self._resolved_model_kwargs(len(columns), self.feature_freq or state["freq"]),
        )
        net.load_state_dict(state["state_dict"])
        self.model_ = net.eval()
        self.scaler_ = StandardScaler.from_state_dict(state["scaler"])
        self.columns_ = columns
        self.freq_ = state["freq"]
        self.layout_ = state["layout"]
        self.date_name_ = state["date_name"]
        tz = state["tz"]
        dates = pd.to_datetime(
            state["last_dates"].numpy(), unit=state["date_unit"], utc=tz is not None
        )
        dates = pd.DatetimeIndex(dates).as_unit(state["date_unit"])
        self.last_dates_ = dates.tz_convert(tz) if tz is not None else dates
        self.last_values_ = state["last_values"].numpy()
        self.best_val_loss_ = state["best_val_loss"]
        self.n_epochs_ = state["n_epochs"]
        return self

    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | os.PathLike, config: str | os.PathLike, **params: Any
    ) -> Forecaster:
        """A fitted forecaster from a ``mixerzoo fit`` run: its config and a checkpoint.

        The config (the run's ``config.yaml``, or the one it was started with; relative data
        paths resolve from the current folder, as for ``mixerzoo predict``) rebuilds the model and
        the data module; the checkpoint gives the weights and the scaler. The data module's file
        is the history: ``predict()`` forecasts the ``horizon`` steps after its end, with the
        same numbers as ``mixerzoo predict --data.init_args.predict_split future`` on the same
        checkpoint, and ``predict(df)`` continues another history of the same series.

        Args:
            ckpt_path: a checkpoint of the run (``checkpoints/best.ckpt``).
            config: the run's config file.
            **params: Forecaster parameters to set besides those the run fixes (e.g.
                ``accelerator``, ``seed``).

        Raises:
            ValueError: a run whose data module is not a ``ForecastDataModule`` with features
                ``"M"`` and scaling, or whose model is not registered.
        """
        settings = yaml.safe_load(Path(config).read_text())
        # The run's own arguments (ckpt_path, ...) are not part of a model-and-data config.
        for key in ("ckpt_path", "weights_only", "return_predictions"):
            settings.pop(key, None)
        with _quiet_lightning(True):
            cli = MixerzooCLI(args=settings, run=False)
        task, dm = cli.model, cli.datamodule
        if not isinstance(dm, ForecastDataModule) or dm.features != "M" or not dm.scale:
            raise ValueError(
                f"{config}: from_checkpoint needs a ForecastDataModule with features 'M' and "
                f"scale true (every series in and out, standardised), as the Forecaster trains"
            )
        names = [n for n in list_models("timeseries") if get_model_class(n) is type(task.model)]
        if not names:
            raise ValueError(
                f"{config}: the model {type(task.model).__name__} is not a registered forecaster"
            )
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        task.load_state_dict(checkpoint["state_dict"])
        dm.load_state_dict(checkpoint.get(type(dm).__qualname__, {}))
        dm.setup("predict")
        model_args = cli.config["model"]["init_args"]["model"]["init_args"]
        model_kwargs = {
            k: v
            for k, v in dict(model_args).items()
            if k not in _OWN_MODEL_ARGS and k in set(inspect.signature(type(task.model)).parameters)
        }
        self = cls(
            model=names[0],
            lookback=dm.seq_len,
            horizon=dm.pred_len,
            label_len=dm.label_len,
            model_kwargs=model_kwargs,
            batch_size=dm.batch_size,
            freq=dm.data_freq,
            fill=dm.fill,
            timeenc=dm.timeenc,
            feature_freq=dm.freq,
            date_column=dm.date_column,
            **params,
        )
        frame = dm.load_frame()
        self.model_ = task.model.cpu().eval()
        self.scaler_ = StandardScaler.from_state_dict(dm.scaler.state_dict())
        self.columns_ = list(dm.columns)
        self.freq_ = dm.data_freq
        self.layout_ = "wide"
        self.date_name_ = dm.date_column
        tail = frame.iloc[len(frame) - self.lookback :]
        self.last_dates_ = pd.DatetimeIndex(tail[dm.date_column])
        self.last_values_ = tail[self.columns_].to_numpy(dtype=np.float64)
        self.best_val_loss_ = None
        self.n_epochs_ = int(checkpoint.get("epoch", -1)) + 1
        return self
