"""Medical segmentation tables: parameter counts against the official code, sliding-window memory
against the volume size, CPU time per volume for Bot and Enc.

Usage::

    python benchmarks/medical.py params [--official PATH] [--umamba PATH] [--check]
    python benchmarks/medical.py memory [--sizes 96 160 224] [--patch 64 64 64]
    python benchmarks/medical.py speed [--repeats 3]

``params``: the parameter counts of xLSTM-UNet (Bot, Enc) for the 2-D and 3-D plans of
``configs/medical/xlstm_unet_{bot,enc}_{2d,3d}.yaml``, with the ``mlstm`` (ViL), ``mamba`` and
``attention`` mixers. With ``--official PATH`` (a checkout of tianrun-chen/xLSTM-UNet-PyTorch, not
part of this project; nothing of it is copied here) the official networks (``UXlstmBot``,
``UXlstmEnc`` of ``nnunetv2/nets/UxLSTM{Bot,Enc}_{2d,3d}.py``) are built from the same plans and
counted beside ours. They need ``dynamic-network-architectures`` and ``einops`` importable (pip
packages); the nnU-Net plan classes that the files import only for their ``get_*_from_plans``
helpers are stubbed. ``--check`` also copies the weights of each official network into ours (a
fixed name map; the two LayerNorm weights the official ViL stores as ``w`` with ``1 + w`` applied
become ``1 + w``) and compares the outputs on a random input, on reduced plans (8 channels at the
first stage) so that the official quadratic-memory mLSTM form fits on a CPU. With ``--umamba PATH``
(a checkout of bowang-lab/U-Mamba) the official U-Mamba networks are counted too, with
``mamba_ssm.Mamba`` (CUDA-only) replaced by the core ``mamba`` mixer, which has the same parameter
tensors (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj).

``memory``: peak resident memory of MONAI sliding-window inference (``SegmentationTask``, patch
64^3, 4 windows per batch) over random volumes of several sizes with the small 3-D Bot network,
each in a fresh process: the growth above the input and output buffers (which any method needs)
stays flat with the volume size.

``speed``: CPU seconds (process time) and wall seconds per volume of sliding-window inference with
the small 3-D Bot and Enc networks on the CT example resampled to 1.5 mm (``--threads`` torch
threads; on a shared machine one thread avoids spin-waiting threads inflating the CPU time).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

#: The plans of configs/medical/xlstm_unet_{bot,enc}_{2d,3d}.yaml.
PLANS = {
    "2d": dict(
        spatial_dims=2,
        in_channels=3,
        features=[32, 64, 128, 256, 512, 512, 512, 512],
        strides=[1, 2, 2, 2, 2, 2, 2, 2],
        kernel=3,
        n_blocks=2,
        patch=[512, 512],
        classes={"bot": 3, "enc": 8},
    ),
    "3d": dict(
        spatial_dims=3,
        in_channels=1,
        features=[32, 64, 128, 256, 320, 320],
        strides=[1, 2, 2, 2, 2, [1, 2, 2]],
        kernel=3,
        n_blocks=2,
        patch=[64, 160, 192],
        classes={"bot": 14, "enc": 14},
    ),
}


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ours(plan: dict, variant: str, mixer: str = "mlstm", **overrides):
    from mixerzoo.medical import XLSTMUNet

    args = dict(
        spatial_dims=plan["spatial_dims"],
        in_channels=plan["in_channels"],
        num_classes=plan["classes"][variant],
        variant=variant,
        features=plan["features"],
        strides=plan["strides"],
        kernel_sizes=plan["kernel"],
        n_blocks=plan["n_blocks"],
        n_blocks_decoder=plan["n_blocks"],
        patch_size=plan["patch"] if variant == "enc" else None,
        mixer=mixer,
    )
    args.update(overrides)
    return XLSTMUNet(**args)


# --- the official code, from a user-supplied checkout ----------------------------------------
def _stub_nnunet_plans() -> None:
    for name in (
        "nnunetv2.utilities.plans_handling",
        "nnunetv2.utilities.plans_handling.plans_handler",
    ):
        module = types.ModuleType(name)
        module.ConfigurationManager = module.PlansManager = object
        sys.modules.setdefault(name, module)


def load_official(checkout: Path, package: str = "UxLSTM") -> dict[str, types.ModuleType]:
    """The official network modules of an xLSTM-UNet (or U-Mamba) checkout."""
    root = checkout / package if (checkout / package).is_dir() else checkout
    if not (root / "nnunetv2" / "nets").is_dir():
        raise SystemExit(
            f"{checkout}: no nnunetv2/nets folder (expected a checkout of the official code)"
        )
    for name in [m for m in sys.modules if m == "nnunetv2" or m.startswith("nnunetv2.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    _stub_nnunet_plans()
    if package == "umamba":
        # mamba_ssm is CUDA-only; the core mixer has the same parameter tensors.
        from mixerzoo.core.mixers.mamba import Mamba

        stub = types.ModuleType("mamba_ssm")
        stub.Mamba = lambda d_model, d_state, d_conv, expand: Mamba(
            int(d_model), d_state=d_state, d_conv=d_conv, expand=expand
        )
        sys.modules["mamba_ssm"] = stub
        names = ("UMambaBot_2d", "UMambaBot_3d", "UMambaEnc_2d", "UMambaEnc_3d")
    else:
        names = ("UxLSTMBot_2d", "UxLSTMBot_3d", "UxLSTMEnc_2d", "UxLSTMEnc_3d")
    try:
        modules = {n: importlib.import_module(f"nnunetv2.nets.{n}") for n in names}
    finally:
        sys.path.remove(str(root))
    return modules


def official(modules: dict, plan: dict, variant: str, prefix: str = "UxLSTM", **overrides):
    """Build the official network of ``variant`` for ``plan`` as its ``get_*_from_plans`` does."""
    d = plan["spatial_dims"]
    n = len(plan["features"])
    module = modules[f"{prefix}{variant.capitalize()}_{d}d"]
    cls = next(
        getattr(module, c)
        for c in ("UXlstmBot", "UXlstmEnc", "UMambaBot", "UMambaEnc")
        if hasattr(module, c) and c.lower().endswith(variant)
    )
    conv = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[d]
    norm = {2: torch.nn.InstanceNorm2d, 3: torch.nn.InstanceNorm3d}[d]
    features = overrides.get("features", plan["features"])
    strides = [[s] * d if isinstance(s, int) else list(s) for s in plan["strides"]]
    kwargs = dict(
        input_channels=plan["in_channels"],
        n_stages=n,
        features_per_stage=list(features),
        conv_op=conv,
        kernel_sizes=[[plan["kernel"]] * d for _ in range(n)],
        strides=strides,
        n_conv_per_stage=[plan["n_blocks"]] * n,
        num_classes=plan["classes"][variant],
        n_conv_per_stage_decoder=[plan["n_blocks"]] * (n - 1),
        conv_bias=True,
        norm_op=norm,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None,
        dropout_op_kwargs=None,
        nonlin=torch.nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )
    if variant == "enc":
        kwargs["input_size"] = overrides.get("patch", plan["patch"])
    model = cls(**kwargs)
    init = importlib.import_module("nnunetv2.utilities.network_initialization")
    model.apply(init.InitWeights_He(1e-2))
    return model


def unused_official_params(model: torch.nn.Module) -> int:
    """Parameters of the LayerNorms the official ViL/Mamba wrappers create but (ViL) never apply."""
    total = 0
    for module in model.modules():
        if type(module).__name__ == "ViLLayer" and hasattr(module, "vil"):
            total += _n(module.norm)
    return total


def official_state_for_ours(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Official parameter names and values -> ours (see the module docstring)."""
    renames = [  # applied in this order
        ("encoder.xlstm_layers.", "encoder.mixer_layers."),
        (".vil.layer.mlstm_cell.outnorm.weight", ".mixer.norm_weight"),
        (".vil.layer.mlstm_cell.", ".mixer."),
        (".vil.layer.conv1d.conv.", ".mixer.conv."),
        (".vil.layer.learnable_skip", ".mixer.skip"),
        (".vil.layer.", ".mixer."),
        (".vil.norm.", ".norm."),
        (".conv1.conv.", ".conv1."),
        (".conv1.norm.", ".norm1."),
        (".conv2.conv.", ".conv2."),
        (".conv2.norm.", ".norm2."),
    ]
    state = {}
    for name, value in model.named_parameters():
        if re.fullmatch(r"(xlstm|encoder\.xlstm_layers\.\d+)\.norm\.(weight|bias)", name):
            continue  # the official wrapper's LayerNorm, never applied
        new = "bottleneck." + name[len("xlstm.") :] if name.startswith("xlstm.") else name
        for old, rep in renames:
            new = new.replace(old, rep)
        value = value.detach().clone()
        if name.endswith((".vil.norm.weight", ".outnorm.weight")):
            value = value + 1.0  # the official LayerNorms apply 1 + w
        state[new] = value
    return state


def check_outputs(modules: dict, plan_name: str, variant: str) -> float:
    """Largest relative output difference, ours vs official, same weights, reduced plan."""
    plan = dict(PLANS[plan_name])
    d = plan["spatial_dims"]
    if d == 2:
        plan.update(
            features=[8, 16, 32, 64, 128, 128], strides=[1, 2, 2, 2, 2, 2], patch=[128, 128]
        )
    else:
        plan.update(
            features=[8, 16, 32, 64, 80], strides=[1, 2, 2, 2, [1, 2, 2]], patch=[32, 64, 64]
        )
    torch.manual_seed(0)
    theirs = official(modules, plan, variant)
    mine = ours(plan, variant)
    missing = mine.load_state_dict(official_state_for_ours(theirs), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(2, plan["in_channels"], *plan["patch"])
    theirs.train()
    mine.train()
    with torch.no_grad():
        out_theirs, out_mine = theirs(x), mine(x)
    worst = 0.0
    for a, b in zip(out_theirs, out_mine):
        worst = max(worst, ((a - b).abs().max() / a.abs().max()).item())
    return worst


def cmd_params(args) -> None:
    modules = load_official(Path(args.official)) if args.official else None
    rows = []
    for plan_name, plan in PLANS.items():
        for variant in ("bot", "enc"):
            counts = {m: _n(ours(plan, variant, m)) for m in ("mlstm", "mamba", "attention")}
            row = {
                "plan": plan_name,
                "variant": variant,
                **{f"ours_{k}": v for k, v in counts.items()},
            }
            if modules is not None:
                net = official(modules, plan, variant)
                row["official"] = _n(net)
                row["official_unused_norm"] = unused_official_params(net)
            rows.append(row)
    if args.umamba:
        um = load_official(Path(args.umamba), package="umamba")
        for row in rows:
            row["umamba_official"] = _n(
                official(um, PLANS[row["plan"]], row["variant"], prefix="UMamba")
            )
    head = [
        "plan",
        "variant",
        "ours (mlstm)",
        "official xLSTM-UNet",
        "official unused LN",
        "ours + unused - official",
    ]
    head += ["ours (mamba)", "ours (attention)"] + (
        ["official U-Mamba (core Mamba)"] if args.umamba else []
    )
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        off = r.get("official")
        cells = [
            r["plan"],
            r["variant"],
            f"{r['ours_mlstm']:,}",
            f"{off:,}" if off is not None else "-",
            f"{r['official_unused_norm']:,}" if off is not None else "-",
            f"{r['ours_mlstm'] + r['official_unused_norm'] - off:,}" if off is not None else "-",
            f"{r['ours_mamba']:,}",
            f"{r['ours_attention']:,}",
        ]
        if args.umamba:
            cells.append(f"{r['umamba_official']:,}")
        print("| " + " | ".join(cells) + " |")
    if args.check:
        if modules is None:
            raise SystemExit("--check needs --official PATH")
        print(
            "\nSame weights, reduced plans: max |ours - official| / max |official| over all outputs"
        )
        for plan_name in PLANS:
            for variant in ("bot", "enc"):
                print(f"  {plan_name} {variant}: {check_outputs(modules, plan_name, variant):.2e}")


# --- sliding-window memory and speed ----------------------------------------------------------
def _small_3d(variant: str, patch):
    from mixerzoo.medical import XLSTMUNet

    return XLSTMUNet(
        3,
        1,
        6,
        variant,
        [8, 16, 32, 64],
        [1, 2, 2, 2],
        patch_size=patch if variant == "enc" else None,
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(size: int, patch: list[int], sw_batch: int) -> None:
    from mixerzoo.medical import SegmentationTask

    torch.manual_seed(0)
    model = _small_3d("bot", patch).eval()
    task = SegmentationTask(model, patch_size=patch, sw_batch_size=sw_batch)
    base = _rss_mb()  # libraries and the model, before any volume or inference
    x = torch.randn(1, 1, size, size, size)
    with torch.no_grad():
        out = task.sliding_window(x)
    peak = _rss_mb()
    # Buffers any sliding window over the whole volume needs (float32): the input, the output
    # (one map per class) and the weight-count map.
    buffers = x.numel() * 4 * (1 + out.shape[1] + 1) / 2**20
    print(json.dumps({"size": size, "base": base, "peak": peak, "buffers": buffers}))


def cmd_memory(args) -> None:
    print(
        f"sliding window: patch {args.patch}, {args.sw_batch} windows per batch, small 3-D Bot "
        f"(6 classes), one fresh process per volume"
    )
    print(
        "| volume | voxels | peak RSS - base (MB) | volume buffers (MB) | working memory = "
        "growth - buffers (MB) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        cmd = [sys.executable, __file__, "_memory_child", str(size), json.dumps(args.patch)]
        cmd.append(str(args.sw_batch))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        growth = r["peak"] - r["base"]
        print(
            f"| {size}^3 | {size**3:,} | {growth:.0f} | {r['buffers']:.0f} | "
            f"{growth - r['buffers']:.0f} |"
        )


def _ct_volume(spacing: float) -> torch.Tensor:
    from mixerzoo.medical import VolumeSegmentation

    dm = VolumeSegmentation(
        str(REPO.parent / "shared" / "data" / "medical" / "ct_example"),
        cases=[{"image": "ct.nii.gz", "label": "seg.nii.gz"}],
        num_classes=6,
        label_values=[0, 5, 1, 2, 3, 6],
        unlisted_labels="background",
        spacing=[spacing] * 3,
        normalization="ct",
        patch_size=[64, 64, 32],
    )
    dm.setup("fit")
    return dm.train_cases[0].image[None]


def cmd_speed(args) -> None:
    from mixerzoo.medical import SegmentationTask

    if args.threads:
        torch.set_num_threads(args.threads)
    x = _ct_volume(args.spacing)
    patch = [64, 64, 32]
    print(
        f"CT example at {args.spacing} mm: volume {tuple(x.shape[2:])}, patch {patch}, overlap 0.5, "
        f"4 windows per batch, {torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    print("| network | parameters | CPU s / volume | wall s / volume |")
    print("| --- | --- | --- | --- |")
    for variant in ("bot", "enc"):
        torch.manual_seed(0)
        model = _small_3d(variant, patch).eval()
        task = SegmentationTask(model, patch_size=patch, sw_batch_size=4)
        cpu, wall = [], []
        with torch.no_grad():
            task.sliding_window(x)  # warm-up
            for _ in range(args.repeats):
                c0, w0 = time.process_time(), time.perf_counter()
                task.sliding_window(x)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
        med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        print(
            f"| xLSTM-UNet {variant.capitalize()} (3-D, 8-64 ch) | {_n(model):,} | {med(cpu):.2f} | {med(wall):.2f} |"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory_child":
        memory_child(int(argv[1]), json.loads(argv[2]), int(argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("params")
    p.add_argument("--official", help="checkout of tianrun-chen/xLSTM-UNet-PyTorch")
    p.add_argument("--umamba", help="checkout of bowang-lab/U-Mamba")
    p.add_argument("--check", action="store_true", help="compare outputs for the same weights")
    m = sub.add_parser("memory")
    m.add_argument("--sizes", type=int, nargs="+", default=[96, 160, 224])
    m.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    m.add_argument("--sw-batch", type=int, default=4)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--spacing", type=float, default=1.5)
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: as configured)")
    args = parser.parse_args(argv)
    {"params": cmd_params, "memory": cmd_memory, "speed": cmd_speed}[args.cmd](args)


if __name__ == "__main__":
    main()
