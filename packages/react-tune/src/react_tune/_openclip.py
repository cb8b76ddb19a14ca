# Vendored from vendor/openclip.py by `nox -s vendor`. Do not edit this copy; edit the source.
"""Loading an open_clip model by name and weights, with the user's mistakes named — one way in every package.

Vendored into every package as `_openclip.py` by `nox -s vendor` (edit this source, never a copy). open_clip
and torch are imported only when a model is loaded (react-index's core installs without them).

`--pretrained` is an open_clip tag or a weights file (see `_manifests.resolve_model`). What a user can get
wrong is refused before or while loading, as a UserError naming the option or file and the fix: an unknown
model name or tag, a pickle holding more than tensors (never unpickled: that can run code), a truncated
safetensors file, weights of another architecture or width (the first tensor that differs is named).
"""

from __future__ import annotations

import logging
import pickle

from ._manifests import UserError, resolve_model

PASSED_THROUGH = ("hf-hub:", "local-dir:")  # open_clip resolves these schemas itself


def _tag(text: str) -> str:
    return text.lower().replace("-", "_")  # as open_clip matches pretrained tags


def check_model_name(model_name: str, weights: str | None, is_file: bool) -> str:
    """open_clip's name for `model_name` (it accepts the old ViT-B/32 spelling); an unknown model or tag raises."""
    import open_clip

    if model_name.startswith(PASSED_THROUGH):
        return model_name
    name = model_name.replace("/", "-")
    if name not in open_clip.list_models():
        raise UserError(f"--model {model_name}: not an open_clip model name; use a built-in one (e.g. ViT-B-32; "
                        "open_clip.list_models()) or register its config with --model-config FILE")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if weights and not is_file and _tag(weights) not in {_tag(t) for t in tags}:
        raise UserError(f"--pretrained {weights}: neither a weights file nor an open_clip tag of "
                        f"{model_name} (its tags: {', '.join(tags) or 'none'})")
    return name


def create(model_name: str, pretrained: str | None, resolved: tuple[dict, str | None] | None = None):
    """(model, train preprocess, eval preprocess, tokenizer, manifest model record) from open_clip; `resolved` is
    `resolve_model(model_name, pretrained)` when the caller already has it (a weights file is hashed once)."""
    import open_clip

    record, weights = resolved or resolve_model(model_name, pretrained)
    is_file = record["pretrained_sha256"] is not None
    check_model_name(model_name, weights, is_file)
    try:
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    except Exception as e:
        if not is_file:
            raise
        raise _weights_error(model_name, pretrained, weights, e) from None
    return model, preprocess_train, preprocess_eval, open_clip.get_tokenizer(model_name), record


def _weights_error(model_name: str, given: str, weights: str, error: Exception) -> Exception:
    """The UserError a weights file's load failure means, or the original error when it is not the file's fault."""
    if isinstance(error, pickle.UnpicklingError):
        return UserError(
            f"{given}: not a weights file that can be loaded safely: a pickle (torch.save) holding more than "
            f"tensors, or no pickle at all ({str(error).splitlines()[0][:120]}). Pickles are never unpickled here, "
            "which could run arbitrary code. Convert the weights to safetensors where you trust the file, e.g. "
            "`safetensors.torch.save_file(state_dict, 'weights.safetensors')`, and pass that file")
    if type(error).__name__ == "SafetensorError":
        return UserError(f"{given}: not a valid safetensors file ({error}); it is truncated or corrupt")
    mismatch = weights_mismatch(model_name, weights)  # open_clip fails on other shapes in many ways (asserts too)
    if mismatch:
        return UserError(f"{given}: these weights do not fit {model_name}: {mismatch}; pass the weights of this "
                         "--model, or the --model they were saved from")
    return error


def weights_mismatch(model_name: str, weights: str) -> str:
    """The first tensor (by name) that is missing, unexpected or of another shape, and how many differ; "" when the
    file's tensors match the model's (or cannot be compared: then the failure is not about shapes)."""
    import open_clip
    from open_clip.factory import load_state_dict

    logging.disable(logging.WARNING)  # open_clip warns that a model made without weights is random: it is meant to be
    try:
        reference = open_clip.create_model(model_name, pretrained=None)
        expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in load_state_dict(weights).items()}
    except Exception:  # unreadable as a state dict at all: not a shape problem
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
