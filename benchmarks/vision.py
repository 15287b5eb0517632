"""Vision backbones: parameters and MACs against the papers, CPU speed, ViR memory by mode.

Tables (``--tables``, all by default):

* ``size``: per named variant, parameters and multiply-accumulates of one 224 x 224 image (the
  "FLOPs" of these papers are MACs) beside the paper's figures, and the relative difference.
  MACs are counted by ``torch.utils.flop_counter`` (matrix products and convolutions, flops / 2).
  EfficientVMamba's selective scans are not matrix products: they are counted with the formula
  of the official code's flop handle (VMamba's ``flops_selective_scan_fn``: ``9 B L D N`` plus
  ``B D L`` for the ``D`` skip), the scan itself being stubbed during the count.
* ``speed``: CPU inference images/s at batch 8, 224 x 224 (``--repeats`` timed runs after a
  warm-up, median); for MambaOut also timm's own ``mambaout_*`` in the same run, timed
  alternately, with the largest logit difference after loading timm's weights into ours.
* ``memory``: ViR-S inference at 224 / 448 / 896 in the parallel form and in the recurrent form
  (the tokens streamed through the network one at a time, and in chunks of 64 tokens): peak
  resident memory added by the forward pass (each measurement in a fresh process,
  ``ru_maxrss`` after minus before), wall time, and the largest logit difference to parallel.
* ``train`` (not in the default set): the CIFAR-10 CPU config's MambaOut training on 2 cores,
  per batch of 256 32 x 32 images: the data transform (ours, :class:`PadCropFlip` in numpy, against
  the same transform through torchvision's and timm's PIL transforms) and one optimiser step in
  float32, under plain bfloat16 autocast (every convolution in bfloat16), and under
  ``bf16-mixed`` as the config runs it (the depthwise convolutions kept in float32), timed
  alternately, median of ``--repeats``.

Examples::

    python benchmarks/vision.py --tables size
    python benchmarks/vision.py --tables speed --variants mambaout_femto vir_small --repeats 5
    python benchmarks/vision.py --tables memory --resolutions 224 448 896 --markdown
    python benchmarks/vision.py --tables train --repeats 5 --markdown
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode

import mixerzoo.vision  # noqa: F401  (registers the models)
from mixerzoo.core.mixers import ss2d as ss2d_module

# Paper figures: (parameters in millions, GMACs at 224). MambaOut: Yu & Wang 2024, Table 1 /
# timm's model cards. EfficientVMamba: Pei et al. 2024, Table 1 (the official training logs give
# the same parameter counts). ViR: the paper's table could not be read here; the reference is the
# ViT of the same shape (DeiT-S/B 4.6 / 17.6 GMACs, ViT-L/16 61.6 GMACs, Dosovitskiy et al. /
# Touvron et al.), with the parameter counts of the issue (ViT + LayerScale, no class-token
# position).
PAPER = {
    "mambaout_femto": (7.30, 1.2),
    "mambaout_kobe": (9.14, 1.5),
    "mambaout_tiny": (26.55, 4.5),
    "mambaout_small": (48.49, 9.0),
    "mambaout_base": (84.81, 15.8),
    "efficientvmamba_tiny": (6.49, 0.8),
    "efficientvmamba_small": (11.27, 1.3),
    "efficientvmamba_base": (33.72, 4.0),
    "vir_small": (22.06, 4.6),
    "vir_base": (86.59, 17.6),
    "vir_large": (304.37, 61.6),
    "vir_large_patch14": (None, None),
}
REFERENCE_NOTE = {
    "vir_small": "ViT-S/16",
    "vir_base": "ViT-B/16",
    "vir_large": "ViT-L/16",
}


@contextmanager
def _counted_scans(record: list[int]):
    """Stub the SS2D mixer's selective scan: record its MACs (official formula), return zeros."""
    real = ss2d_module.selective_scan

    def stub(u, delta, A, B, C, D=None, *args, **kwargs):
        batch, channels, length = u.shape
        record.append(9 * batch * length * channels * A.shape[1] + batch * channels * length)
        return torch.zeros_like(u)

    ss2d_module.selective_scan = stub
    try:
        yield
    finally:
        ss2d_module.selective_scan = real


def count_macs(model: torch.nn.Module, size: int = 224) -> int:
    """Multiply-accumulates of one ``size x size`` image (see the module docstring)."""
    scans: list[int] = []
    model.eval()
    with torch.no_grad(), _counted_scans(scans), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() // 2 + sum(scans)


def size_table(variants: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in variants:
        model = timm.create_model(f"mixerzoo_{name}")
        params = sum(p.numel() for p in model.parameters()) / 1e6
        macs = count_macs(model) / 1e9
        paper_params, paper_macs = PAPER.get(name, (None, None))
        rows.append(
            {
                "variant": f"mixerzoo_{name}",
                "params (M)": f"{params:.2f}",
                "paper params (M)": _fmt(paper_params),
                "params diff": _diff(params, paper_params),
                "GMACs @224": f"{macs:.2f}",
                "paper GMACs": _fmt(paper_macs)
                + (f" ({REFERENCE_NOTE[name]})" if name in REFERENCE_NOTE else ""),
                "MACs diff": _diff(macs, paper_macs),
            }
        )
        del model
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _diff(value: float, reference: float | None) -> str:
    return "-" if reference is None else f"{100 * (value / reference - 1):+.1f}%"


def _time(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def speed_table(variants: list[str], repeats: int, batch: int) -> list[dict[str, Any]]:
    rows = []
    x = torch.randn(batch, 3, 224, 224)
    for name in variants:
        torch.manual_seed(0)
        ours = timm.create_model(f"mixerzoo_{name}").eval()
        ref = None
        if name.startswith("mambaout_"):
            ref = timm.create_model(name).eval()
            ours.load_state_dict(ref.state_dict())
        models = {"ours": ours, "timm": ref} if ref is not None else {"ours": ours}
        for model in models.values():
            _time(model, x)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(repeats):
            # Alternate the two models so that a change of machine load hits both alike.
            for key, model in models.items():
                times[key].append(_time(model, x))
        row = {
            "variant": f"mixerzoo_{name}",
            "images/s (ours)": f"{batch / statistics.median(times['ours']):.1f}",
        }
        if ref is not None:
            with torch.no_grad():
                diff = (ours(x[:2]) - ref(x[:2])).abs().max().item()
            ratio = statistics.median(times["timm"]) / statistics.median(times["ours"])
            row |= {
                "images/s (timm)": f"{batch / statistics.median(times['timm']):.1f}",
                "ours / timm speed": f"{ratio:.2f}x",
                "max |logit diff|": f"{diff:.1e}",
            }
        rows.append(row)
        del ours, ref, models
    return rows


CIFAR_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vision" / "mambaout_cifar10.yaml"


class _Bf16Conv(torch.nn.Module):
    """A convolution as plain autocast runs it: inputs, weight and bias cast to bfloat16."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        bias = None if c.bias is None else c.bias.bfloat16()
        return F.conv2d(
            x.bfloat16(), c.weight.bfloat16(), bias, c.stride, c.padding, c.dilation, c.groups
        )


def train_table(repeats: int, batch: int = 256) -> list[dict[str, Any]]:
    from PIL import Image

    from mixerzoo.core.mixers.gated_cnn import GatedCNN
    from mixerzoo.vision.data import ImageFolderDataModule
    from mixerzoo.vision.models import MambaOut

    config = yaml.safe_load(CIFAR_CONFIG.read_text())
    data = ImageFolderDataModule(**config["data"]["init_args"])
    ours, pil = data.train_transform(), data.pil_train_transform()
    if type(ours).__name__ != "PadCropFlip":
        raise ValueError(f"{CIFAR_CONFIG} no longer trains with PadCropFlip but {ours}")
    size = data.input_size
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8).numpy()
    loaders = {
        "PadCropFlip (numpy)": lambda: torch.stack([ours(a) for a in images]),
        "torchvision + timm (PIL)": lambda: torch.stack([pil(Image.fromarray(a)) for a in images]),
    }

    torch.manual_seed(0)
    model_args = config["model"]["init_args"]["model"]["init_args"]
    models = {name: MambaOut(**model_args) for name in ("float32", "bf16 autocast", "bf16-mixed")}
    for mixer in models["bf16 autocast"].modules():
        if isinstance(mixer, GatedCNN):
            mixer.conv = _Bf16Conv(mixer.conv)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, model_args["num_classes"], (batch,))

    def stepper(model: torch.nn.Module, bf16: bool):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    jobs = {f"data: {k}": v for k, v in loaders.items()}
    jobs |= {f"step: {k}": stepper(m, k != "float32") for k, m in models.items()}
    for job in jobs.values():
        job()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():  # alternately, as in the speed table
            start = time.perf_counter()
            job()
            times[key].append(time.perf_counter() - start)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    rows = []
    for key in jobs:
        peer = "data: torchvision + timm (PIL)" if key.startswith("data") else "step: float32"
        rows.append(
            {
                f"per batch of {batch}": key,
                "ms": f"{ms[key]:.1f}",
                "speed-up": f"{ms[peer] / ms[key]:.2f}x",
            }
        )
    return rows


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0: ``5 > /proc/self/clear_refs``), so
    that the peak read afterwards belongs to what runs next and not to imports or model creation.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_child(mode: str, size: int, chunk: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS added by one ViR-S forward at ``size``."""
    torch.manual_seed(0)
    model = timm.create_model("mixerzoo_vir_small").eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        if _reset_peak_rss():
            before = _rss_kib("VmRSS")
        else:  # the high-water mark of the whole process so far (imports, model creation)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if mode == "parallel":
            model.mode = "parallel"
            logits = model(x)
        else:
            logits = model.forward_head(model.forward_recurrent(x, chunk_tokens=chunk).unsqueeze(1))
        seconds = time.perf_counter() - start
        after = _rss_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # The parallel form's logits, the reference, only after the peak was read.
        reference = model(x) if mode != "parallel" else None
    diff = 0.0 if reference is None else (logits - reference).abs().max().item()
    return {"peak_mb": (after - before) / 1024, "seconds": seconds, "diff": diff}


def memory_table(resolutions: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in resolutions:
        tokens = (size // 16) ** 2 + 1
        for mode, chunk in (("parallel", 0), ("recurrent", 1), ("chunkwise recurrent", 64)):
            args = [sys.executable, __file__, "--memory-child", mode, str(size), str(chunk)]
            out = subprocess.run(args, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "resolution": size,
                    "tokens": tokens,
                    "mode": mode + (f" ({chunk} tokens)" if chunk > 1 else ""),
                    "peak memory added (MiB)": f"{result['peak_mb']:.0f}",
                    "time (s)": f"{result['seconds']:.2f}",
                    "max |logit diff| vs parallel": f"{result['diff']:.1e}",
                }
            )
    return rows


def print_table(title: str, rows: list[dict[str, Any]], markdown: bool) -> None:
    if not rows:
        return
    keys = list(rows[0])
    print(f"\n{title}")
    if markdown:
        print("| " + " | ".join(keys) + " |")
        print("| " + " | ".join("---" for _ in keys) + " |")
        for row in rows:
            print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        return
    widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for row in rows:
        print("  ".join(str(row.get(k, "")).ljust(w) for k, w in zip(keys, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=["size", "speed", "memory"])
    parser.add_argument("--variants", nargs="+", default=list(PAPER))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 448, 896])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        mode, size, chunk = args.memory_child
        print(json.dumps(_memory_child(mode, int(size), int(chunk))))
        return
    unknown = sorted(set(args.variants) - set(PAPER))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(PAPER)}")
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads")
    if "size" in args.tables:
        print_table("Parameters and MACs at 224 x 224", size_table(args.variants), args.markdown)
    if "speed" in args.tables:
        rows = speed_table(args.variants, args.repeats, args.batch)
        print_table(f"CPU inference, batch {args.batch}, 224 x 224", rows, args.markdown)
    if "memory" in args.tables:
        rows = memory_table(args.resolutions)
        print_table("ViR-S inference memory by mode", rows, args.markdown)
    if "train" in args.tables:
        rows = train_table(args.repeats)
        print_table("CIFAR-10 CPU config (MambaOut): training data and step", rows, args.markdown)


if __name__ == "__main__":
    main()
