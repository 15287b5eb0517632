"""Tiny data for the time-series configs: a CSV with the ETT columns, long enough for the config's
windows under the 70/10/20 ratio protocol, and the arguments that point the config at it."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The ETT columns (target OT last): the configs' models that fix the number of variables
# (Informer's and Autoformer's enc_in: 7) get what they expect.
COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


def overrides(config: dict[str, Any], tmp_path: Path) -> list[str]:
    """Write the tiny CSV for ``config`` and return the CLI arguments that use it."""
    data = config["data"]["init_args"]
    seq_len, pred_len = data.get("seq_len", 96), data.get("pred_len", 96)
    # Validation holds 10% of the rows and needs a horizon of targets; a test split of 20%.
    n_rows = 10 * (seq_len + pred_len) + 20
    t = np.arange(n_rows)
    rng = np.random.default_rng(0)
    frame = {"date": pd.date_range("2020-01-01", periods=n_rows, freq="h")}
    for j, name in enumerate(COLUMNS):
        frame[name] = np.sin(2 * np.pi * t / 24 + j) + 0.1 * rng.standard_normal(n_rows)
    path = tmp_path / "tiny.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    return [
        "--data.init_args.data_path", str(path),
        "--data.init_args.root", "null",
        # One fast_dev_run batch of two windows tests the config as well as one of 32.
        "--data.init_args.batch_size", "2",
    ]  # fmt: skip
