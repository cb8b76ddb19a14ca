"""The model side: load a frozen open_clip base, add gated blocks, choose what trains (the variant)."""

from __future__ import annotations

import logging
import pickle

import open_clip
import torch
from open_clip.factory import load_state_dict
from safetensors import SafetensorError

from ._manifests import UserError, resolve_model
from .blocks import ReactLayer, insert_gated_blocks

VARIANTS = ("gated-image", "locked-text")


def load_base(model_name: str, pretrained: str | None):
    """(model, train preprocess, eval preprocess, tokenizer, model record), weights loaded through open_clip."""
    known = model_name.replace("/", "-")  # open_clip accepts the old spelling, ViT-B/32
    if ":" not in model_name and known not in open_clip.list_models():  # hf-hub:/local-dir: go to open_clip
        raise UserError(f"--model {model_name}: not an open_clip model name (see open_clip.list_models()); for a "
                        "custom architecture pass its config with --model-config FILE")
    record, weights = resolve_model(model_name, pretrained)
    if weights and record["pretrained_sha256"] is None and ":" not in model_name:
        tags = open_clip.list_pretrained_tags_by_model(known)
        if weights.lower().replace("-", "_") not in tags:  # open_clip's own normalisation of a tag
            raise UserError(f"--pretrained {weights}: not a weights file (none by that name) nor an open_clip tag "
                            f"of {model_name} (its tags: {', '.join(tags) or 'none'})")
    if record["pretrained_sha256"] is None:  # an open_clip tag (or none)
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(model_name, pretrained=weights)
        return model, preprocess_train, preprocess_eval, open_clip.get_tokenizer(model_name), record
    try:  # a weights file: open_clip reads it (torch.load with weights_only=True for anything not safetensors)
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{pretrained}: not a weights file react-tune can load safely: a pickle (torch.save) holding more than "
            f"tensors, or no pickle at all ({str(e).splitlines()[0][:120]}). react-tune never unpickles objects, "
            "which can run arbitrary code. Convert the weights to safetensors where you trust the file, e.g. "
            "`safetensors.torch.save_file(state_dict, 'weights.safetensors')`, and pass that file") from None
    except Exception as e:
        if isinstance(e, SafetensorError):
            raise UserError(f"{pretrained}: not a valid safetensors file ({e}); it is truncated or corrupt") from None
        mismatch = _mismatch(model_name, weights)  # open_clip fails on other shapes in many ways (asserts too)
        if mismatch:
            raise UserError(f"{pretrained}: these weights do not fit {model_name}: {mismatch}; pass the weights "
                            "of this --model, or the --model they were saved from") from None
        raise
    return model, preprocess_train, preprocess_eval, open_clip.get_tokenizer(model_name), record


def _mismatch(model_name: str, weights: str) -> str:
    """The first tensor (by name) that is missing, unexpected or of another shape, and how many differ; "" when
    the file's tensors match the model's (or cannot be compared: then the failure is not about shapes)."""
    logging.disable(logging.WARNING)  # open_clip warns that a model made without weights is random: it is meant to be
    try:
        reference = open_clip.create_model(model_name, pretrained=None)
        expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in load_state_dict(weights).items()}
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, SafetensorError):
        return ""
    finally:
        logging.disable(logging.NOTSET)
    shape = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    parts = []
    if shape:
        parts.append(f"tensor {shape[0]} has shape {list(got[shape[0]])} in the file but {list(expected[shape[0]])} "
                     f"in the model ({len(shape)} tensors differ in shape)")
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are not in the file (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors in the file are not in the model (e.g. {unexpected[0]})")
    return "; ".join(parts)


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
