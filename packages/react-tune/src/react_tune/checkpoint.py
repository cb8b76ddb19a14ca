"""Checkpoints without pickle: final blocks + manifest, resumable training state, and loading.

    CKPT_DIR/blocks.safetensors      the trained tensors only (gated blocks + logit_scale, or the image tower)
    CKPT_DIR/manifest.json           react.checkpoint (docs/manifests.md)
    CKPT_DIR/state/{step:08d}/       trainable, optimizer and RNG tensors (safetensors) of a periodic save
    CKPT_DIR/state/latest.json       written last: which step folder is complete, and the loop's position
"""

from __future__ import annotations

import hashlib
import json

import fsspec
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ._manifests import UserError, _sha256, join, manifest_uri, resolve_model, write_bytes_atomic
from .manifest import CHECKPOINT, ManifestError, read_manifest, write_manifest
from .model import customize, load_base

WEIGHTS = "blocks.safetensors"


def read_safetensors(uri: str, sha256: str | None = None, recorded_in: str = "") -> dict[str, torch.Tensor]:
    """Load a safetensors file; anything else — above all a pickle from torch.save — is refused. With `sha256`
    (as a manifest records it), bytes that differ from those recorded are refused too."""
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(f"{uri}: weights file not found") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header. A pickle starts with b"\x80" (or a
    # zip's b"PK"), but so does a safetensors file whose header length is 128 mod 256: look at the header first
    safetensors = len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8
    if not safetensors and (data[:2] == b"PK" or data[:1] == b"\x80"):
        raise ManifestError(f"{uri}: this is a pickle (torch.save) file; react-tune never unpickles weights, "
                            "which can run arbitrary code. Save them with safetensors instead")
    if sha256 is not None and "sha256:" + hashlib.sha256(data).hexdigest() != sha256:
        raise ManifestError(f"{uri}: the file changed after {recorded_in or 'its manifest'} was written: its sha256 "
                            f"is not the {sha256[:19]}… recorded there. Restore the file that was saved, or train "
                            "again; react-tune does not load weights other than those its manifest names")
    try:
        return load_bytes(data)
    except Exception as e:
        raise ManifestError(f"{uri}: not a valid safetensors file ({e})") from None


def write_safetensors(uri: str, tensors: dict[str, torch.Tensor]) -> None:
    write_bytes_atomic(uri, save_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


class StateError(UserError):
    """A saved training state (OUT/state/) that cannot be resumed from."""


# --- resumable training state ----------------------------------------------------------------------

def _optimizer_tensors(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors = {f"{i}.{name}": v for i, s in state["state"].items() for name, v in s.items()
               if isinstance(v, torch.Tensor)}
    scalars = {f"{i}.{name}": v for i, s in state["state"].items() for name, v in s.items()
               if not isinstance(v, torch.Tensor)}
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save_state(out: str, step: int, trainable: dict, optimizer, position: dict) -> None:
    folder = join(out, "state", f"{step:08d}")
    write_safetensors(join(folder, "trainable.safetensors"), trainable)
    tensors, meta = _optimizer_tensors(optimizer)
    write_safetensors(join(folder, "optimizer.safetensors"), tensors)
    write_safetensors(join(folder, "rng.safetensors"), {"torch": torch.get_rng_state()})
    latest = {"step": step, "folder": f"{step:08d}", "position": position, "optimizer": meta}
    write_bytes_atomic(join(out, "state", "latest.json"), json.dumps(latest).encode())
    fs, path = fsspec.core.url_to_fs(join(out, "state"))
    for old in fs.ls(path, detail=False):  # earlier complete states are no longer needed
        if old.rstrip("/").rsplit("/", 1)[-1].isdigit() and not old.rstrip("/").endswith(f"{step:08d}"):
            fs.rm(old, recursive=True)


def assign(model, tensors: dict[str, torch.Tensor], where: str, expected: set[str] | None = None) -> None:
    """Copy saved tensors into the model's parameters of the same names, refusing (naming `where` and the
    tensor) a name the model lacks, a shape that does not fit, or — with `expected` — a parameter not saved."""
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ManifestError(f"{where}: {len(unknown)} tensors do not fit this model (e.g. {unknown[0]}); is this the "
                            "right base model, --variant and --blocks?")
    for name in sorted(tensors):
        if tuple(tensors[name].shape) != tuple(params[name].shape):
            raise ManifestError(f"{where}: tensor {name} has shape {list(tensors[name].shape)}, but this model's "
                                f"has shape {list(params[name].shape)}; the weights were made for another base model "
                                "(or width); is this the right base model?")
    absent = sorted((expected or set()) - set(tensors))
    if absent:
        raise ManifestError(f"{where}: {len(absent)} trained tensors are missing (e.g. {absent[0]}); the file is "
                            "incomplete or belongs to another variant")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def has_state(out: str) -> bool:
    fs, path = fsspec.core.url_to_fs(join(out, "state", "latest.json"))
    return fs.exists(path)


def load_state(out: str, model, optimizer) -> dict | None:
    """Restore trainable weights, optimizer and RNG from the latest complete state; returns its position."""
    uri = join(out, "state", "latest.json")
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        latest = json.loads(data)
        folder = join(out, "state", latest["folder"])
        step, position, meta = int(latest["step"]), dict(latest["position"]), latest["optimizer"]
        groups, scalars = meta["param_groups"], meta["scalars"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise StateError(f"{uri}: not a complete training state ({type(e).__name__}: {e}); it is truncated or "
                         f"was edited. To start over, remove {join(out, 'state')} (or use a new --out); to keep "
                         "the run, restore the file") from None
    trainable = read_safetensors(join(folder, "trainable.safetensors"))
    assign(model, trainable, join(folder, "trainable.safetensors"),
           {name for name, p in model.named_parameters() if p.requires_grad})
    tensors = read_safetensors(join(folder, "optimizer.safetensors"))
    state: dict = {}
    for key, value in list(tensors.items()) + list(scalars.items()):
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(read_safetensors(join(folder, "rng.safetensors"))["torch"])
    return position | {"step": step}


# --- the final checkpoint -------------------------------------------------------------------------

def write_checkpoint(out: str, trainable: dict, base: dict, variant: str, blocks: dict | None, training: dict,
                     lineage, weights_file: str = WEIGHTS, head: dict | None = None) -> dict:
    uri = join(out, weights_file)
    write_safetensors(uri, trainable)
    weights = {"file": weights_file, "sha256": _sha256(uri),
               "parameters": int(sum(t.numel() for t in trainable.values()))}
    blocks = blocks or {"k": 0, "positions": [], "width": 0, "heads": 0, "mlp_ratio": 0.0, "act": ""}
    body = {"base_model": base, "variant": variant, "blocks": blocks, "weights": weights, "training": training}
    if head is not None:  # linear-head (REAL-Linear): its classes, prompts, ensemble weight, held-out accuracy
        body["head"] = head
    return write_manifest(manifest_uri(out), CHECKPOINT, body, lineage)


def read_weights(checkpoint_dir: str, manifest: dict) -> tuple[str, dict]:
    """(uri, tensors) of a checkpoint's weights file: safetensors only, with the sha256 its manifest records."""
    if not manifest["weights"]["file"].endswith(".safetensors"):
        raise ManifestError(f"{checkpoint_dir}: weights file {manifest['weights']['file']} is not safetensors; "
                            "react-tune loads only safetensors")
    weights_uri = join(checkpoint_dir, manifest["weights"]["file"])
    return weights_uri, read_safetensors(weights_uri, manifest["weights"]["sha256"], manifest_uri(checkpoint_dir))


def load_checked_base(checkpoint_dir: str, manifest: dict, pretrained: str | None, trained: str):
    """(base model, eval preprocess, tokenizer) a checkpoint was trained on; `pretrained` may move its weights file,
    but weights with another checksum than the one recorded are refused (the `trained` parts would not fit)."""
    base = manifest["base_model"]
    record, _ = resolve_model(base["name"], pretrained or base["pretrained"] or None)
    if base["pretrained_sha256"] and record["pretrained_sha256"] not in (None, base["pretrained_sha256"]):
        raise ManifestError(f"{checkpoint_dir}: the base weights {record['pretrained']} differ from those the "
                            f"{trained} were trained on ({base['pretrained_sha256'][:19]}…)")
    model, _, preprocess, tokenizer, _ = load_base(base["name"], pretrained or base["pretrained"] or None)
    return model, preprocess, tokenizer


def load_checkpoint(checkpoint_dir: str, *, device: str = "cpu", pretrained: str | None = None):
    """(customized model in eval mode, eval preprocess, tokenizer, manifest) from a checkpoint folder.

    `pretrained` overrides where the base weights come from (e.g. the same file at another path); its
    checksum must match the one recorded, so a checkpoint is never applied to the wrong base.
    """
    manifest = read_manifest(manifest_uri(checkpoint_dir), CHECKPOINT)
    base = manifest["base_model"]
    if manifest["variant"] == "linear-head":
        raise ManifestError(f"{checkpoint_dir}: a linear-head checkpoint leaves the model unchanged and carries a "
                            "classifier: evaluate it with `react-eval run --model react:CKPT`, or load it with "
                            "react_tune.linear_head.load_head(CKPT)")
    weights_uri, tensors = read_weights(checkpoint_dir, manifest)
    model, preprocess, tokenizer = load_checked_base(checkpoint_dir, manifest, pretrained, "blocks")
    customize(model, manifest["variant"], manifest["blocks"]["k"] or None, seed=None)
    assign(model, tensors, f"{weights_uri} (checkpoint for {base['name']})",
           {name for name, p in model.named_parameters() if p.requires_grad})
    return model.eval().to(device), preprocess, tokenizer, manifest


def load_model(checkpoint_dir: str, *, device: str = "cpu", pretrained: str | None = None):
    """`react_tune.load_model(dir) -> (model, preprocess, tokenizer)`: a REACT checkpoint, ready to use like an
    open_clip model (eval mode, on `device`). `pretrained` as for `load_checkpoint`."""
    model, preprocess, tokenizer, _ = load_checkpoint(checkpoint_dir, device=device, pretrained=pretrained)
    return model, preprocess, tokenizer
