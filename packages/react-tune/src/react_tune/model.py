"""The model side: load a frozen open_clip base, add gated blocks, choose what trains (the variant)."""

from __future__ import annotations

import torch

from ._manifests import UserError
from ._openclip import create
from .blocks import ReactLayer, insert_gated_blocks

VARIANTS = ("gated-image", "locked-text")


def load_base(model_name: str, pretrained: str | None):
    """(model, train preprocess, eval preprocess, tokenizer, model record), weights loaded through open_clip; an
    unknown name or tag, a pickle, or weights of another model are refused by name (the vendored `_openclip`)."""
    return create(model_name, pretrained)


def customize(model, variant: str = "gated-image", k: int | None = None, seed: int | None = 0) -> dict | None:
    """Freeze the model for `variant`; gated-image also inserts the blocks. Returns the block config (or None)."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    model.requires_grad_(False)
    config = None
    if variant == "gated-image":
        config = insert_gated_blocks(model, k, seed)
        for module in model.visual.modules():
            if isinstance(module, ReactLayer):
                module.gate.requires_grad_(True)
    else:
        model.visual.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    return config


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint keeps: exactly the trainable parameters."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norms' gains, gates and logit_scale are not decayed (REACT / open_clip recipe)."""
    return param.ndim < 2 or "alpha_" in name or "logit_scale" in name or ".ln_" in name or name.endswith(".bias")


def optimizer_groups(model, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
