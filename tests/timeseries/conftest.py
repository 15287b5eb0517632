from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def make_csv(
    path: Path, n_rows: int = 600, n_vars: int = 3, freq: str = "h", seed: int = 0
) -> Path:
    """A small hourly forecasting CSV: daily sines with noise, columns date, v0.., OT."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    data = {"date": pd.date_range("2020-01-01", periods=n_rows, freq=freq)}
    for j in range(n_vars):
        data[f"v{j}"] = (
            np.sin(2 * np.pi * t / 24 + j) * (j + 1) + 0.1 * rng.standard_normal(n_rows) + j
        )
    data["OT"] = np.sin(2 * np.pi * t / 24) * 5 + 20 + 0.1 * rng.standard_normal(n_rows)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


@pytest.fixture
def small_csv(tmp_path) -> Path:
    return make_csv(tmp_path / "toy.csv")
