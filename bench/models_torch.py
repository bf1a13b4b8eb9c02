"""bench/models_torch.py — the PyTorch side of bench/models.lua's whole models: the same
architectures, shape for shape, built from the PyTorch modules of the fixture generators
(tests/tools/fixtures_unet.py: HoUNet, LucidUnet; tests/tools/fixtures_cunet.py: ContinuousUNet)
with the config the cunet preset resolves to, read from bench/models.lua's JSON description.

    import models_torch
    desc = models_torch.describe()           # {"models": [...], "cases": [...]} from bench/models.lua
    model = models_torch.build(desc_model)   # a torch module; its parameter counts equal cunet's or it raises

The description comes from the file named by BENCH_MODELS (bench/run.sh writes it once), or else
from running `$CUNET bench/models.lua` (CUNET defaults to ./cunet, relative to the repository root).
Weights are PyTorch's own initialisation: the bench needs the same shapes, not the same numbers.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

import fixtures_cunet  # noqa: E402  (its fixture code runs only as a script)
from fixtures_thop import U as fixtures_unet  # noqa: E402  (fixtures_unet.py's classes, without its fixture code)


def describe():
    """bench/models.lua's description: models (name, family, preset, label, shape, config,
    num_timesteps, params, trainable) and cases (key, model, mode, batch)."""
    path = os.environ.get("BENCH_MODELS")
    if path:
        with open(path) as f:
            return json.load(f)
    cunet = os.environ.get("CUNET") or "./cunet"
    text = subprocess.run([cunet, os.path.join("bench", "models.lua")], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    return json.loads(text)


def _require(model, cond, what):
    if not cond:
        raise SystemExit(f"bench: {model['name']}: the PyTorch twin cannot build this config: {what}")


def _unet(m):
    c = m["config"]
    _require(m, c["out_channels"] == c["in_channels"], "out_channels != in_channels")
    if c["arch"] == "ddpm":
        # HoUNet: GroupNorm(norm_groups, eps 1e-6), conv resampling, as the ddpm defaults
        _require(m, c["norm_eps"] == 1e-6 and c["resamp_with_conv"], "norm_eps/resamp_with_conv other than HoUNet's")
        return fixtures_unet.HoUNet(c["ch"], tuple(c["ch_mult"]), c["num_res_blocks"], tuple(c["attn_resolutions"]),
                                    c["dropout"], c["in_channels"], c["out_channels"], c["resolution"],
                                    groups=c["norm_groups"])
    # LucidUnet: two ResnetBlocks per level, attention with 4 heads of 32, GroupNorm eps 1e-5
    _require(m, c["arch"] == "lucidrains", "arch " + c["arch"])
    _require(m, c["num_res_blocks"] == 2 and c["attn_heads"] == 4 and c["attn_dim_head"] == 32
             and c["norm_eps"] == 1e-5 and isinstance(c["full_attn"], list), "lucidrains options other than LucidUnet's")
    return fixtures_unet.LucidUnet(dim=c["ch"], dim_mults=tuple(c["ch_mult"]), channels=c["in_channels"],
                                   full_attn=tuple(c["full_attn"]), groups=c["norm_groups"])


def _cunet(m):
    c = m["config"]
    _require(m, not c["adjoint"], "adjoint")
    _require(m, c["method"] in ("rk4", "rk4_38"), "method " + c["method"])
    _require(m, c["ablation"] == "none", "ablation (already applied to the config)")
    cfg = dict(fixtures_cunet.DEFAULTS)
    cfg.update(c)  # every option the Lua side resolved (extra keys: rtol, atol, adjoint, ablation)
    return fixtures_cunet.ContinuousUNet(cfg)


def count(model):
    """(total, trainable) parameter elements."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def build(m):
    """The torch twin of one described model; raises SystemExit when its parameter counts differ
    from cunet's."""
    model = _unet(m) if m["family"] == "unet" else _cunet(m)
    total, trainable = count(model)
    if (total, trainable) != (m["params"], m["trainable"]):
        raise SystemExit(f"bench: {m['name']}: parameter counts differ: cunet {m['params']:,} "
                         f"({m['trainable']:,} trainable), torch {total:,} ({trainable:,} trainable)")
    return model


if __name__ == "__main__":
    # /usr/bin/python3 bench/models_torch.py: builds every model and prints both sides' counts
    for m in describe()["models"]:
        total, trainable = count(build(m))
        print(f"{m['name']:<22} cunet {m['params']:>11,} ({m['trainable']:>11,} trainable)   "
              f"torch {total:>11,} ({trainable:>11,} trainable)")
