"""Finding forecasting CSVs: an explicit folder, ``$MIXERZOO_DATA``, the cache, a download.

``find_dataset("ETTh1.csv", root=None)`` looks in ``root`` when given (and only there), else in
``$MIXERZOO_DATA/timeseries/`` and ``$MIXERZOO_DATA/``, then in the cache
``~/.cache/mixerzoo/timeseries`` (``$XDG_CACHE_HOME`` respected), and finally downloads the files
with a known public URL (ETT) into the cache. Offline and not found, the error names every place
it looked and how to get the data.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

__all__ = ["find_dataset"]

# Public locations of the ETT files (the Informer authors' repository).
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}"
_DOWNLOADS = {
    f"{n}.csv": _ETT_URL.format(name=f"{n}.csv") for n in ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
}
_HOW_TO_GET = (
    "The standard long-term forecasting CSVs (ETT, Weather, Electricity, Traffic, Exchange, ILI) "
    "are distributed with Time-Series-Library and Autoformer (see their READMEs); put the file in "
    "one of these folders or pass root=..."
)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mixerzoo" / "timeseries"


def find_dataset(
    data_path: str, root: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Locate a forecasting CSV by file name.

    Args:
        data_path: a file name such as ``"ETTh1.csv"`` (``.csv`` optional) or a path to a file.
        root: folder to look in first; when given, only this folder is searched.
        download: allow downloading files with a known public URL into the cache.

    Returns:
        Path of the existing file.

    Raises:
        FileNotFoundError: naming every place looked at and how to get the data.
    """
    direct = Path(data_path).expanduser()
    if direct.is_file():
        return direct
    name = direct.name if direct.suffix else f"{direct.name}.csv"
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root).expanduser() / name)
    else:
        env = os.environ.get("MIXERZOO_DATA")
        if env:
            candidates += [Path(env) / "timeseries" / name, Path(env) / name]
        candidates.append(_cache_dir() / name)
    for path in candidates:
        if path.is_file():
            return path
    download_error = ""
    if root is None and download and name in _DOWNLOADS:
        target = _cache_dir() / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            urllib.request.urlretrieve(_DOWNLOADS[name], tmp)  # noqa: S310 (fixed https URL)
            tmp.rename(target)
            return target
        except OSError as err:
            download_error = f" Downloading {_DOWNLOADS[name]} failed: {err}."
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"forecasting data file {name!r} not found; looked in: {looked}.{download_error} "
        f"{_HOW_TO_GET} (or set MIXERZOO_DATA)."
    )
