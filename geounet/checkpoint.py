"""Training checkpoints without pickle: module and AdamW state as safetensors, the rest as JSON.

``OUT/checkpoint/`` holds ``model.safetensors`` (module state), ``optimizer.safetensors``
(moment tensors, keyed ``<param id>.<name>``) and ``state.json`` (step, param groups, best
score, history). The folder is written beside as ``.checkpoint.partial`` and swapped in when
complete, so a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from geounet.errors import InputNotFoundError, WriteError

CHECKPOINT = "checkpoint"
EMA = "ema.safetensors"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {
        f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items() for k, v in st.items()
    }
    return tensors, {"param_groups": sd["param_groups"]}


def save_checkpoint(
    out: Path,
    *,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: nn.Module | None = None,
) -> Path:
    """Write ``out/checkpoint`` (safetensors + JSON) atomically: a temp folder renamed when complete.

    ``ema`` (the weight average of ``train.ema``) goes to ``ema.safetensors`` beside the module.
    """
    final = out / CHECKPOINT
    tmp = out / f".{CHECKPOINT}.partial"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp / "model.safetensors"
        )
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, tmp / EMA)
        tensors, meta = _optimizer_tensors(opt)
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, **meta}, indent=1, allow_nan=False))
        old = out / f".{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise WriteError(f"cannot write checkpoint {final}: {exc}; check disk space and permissions") from exc
    return final


def load_checkpoint(
    out: Path, *, net: nn.Module, opt: torch.optim.Optimizer, ema: nn.Module | None = None
) -> dict[str, Any]:
    """Restore module, optimizer (and ``ema``) from ``out/checkpoint``; returns the JSON state."""
    ck = out / CHECKPOINT
    if not (ck / "state.json").exists():
        raise InputNotFoundError(f"no checkpoint in {ck}; run without --resume first")
    state: dict[str, Any] = json.loads((ck / "state.json").read_text())
    net.load_state_dict(load_file(ck / "model.safetensors"))
    if ema is not None:
        if not (ck / EMA).exists():
            raise InputNotFoundError(
                f"checkpoint {ck} has no {EMA} but train.ema is set; resume with the recipe it was run with"
            )
        ema.load_state_dict(load_file(ck / EMA))
    flat = load_file(ck / "optimizer.safetensors")
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        per.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": per, "param_groups": state.pop("param_groups")})
    return state
