"""`react-tune export CKPT_DIR --merged OUT`: one safetensors file with the whole customized model + a config."""

from __future__ import annotations

import json
import tempfile

import open_clip

from ._manifests import manifest_uri, write_bytes_atomic
from .checkpoint import load_checkpoint, read_safetensors, write_safetensors
from .manifest import lineage_entry
from .model import customize


def export_merged(checkpoint_dir: str, out: str) -> str:
    """Write the whole customized model of `checkpoint_dir` to `out` as model.safetensors + config.json (the base
    model's open_clip config, the variant and blocks, and the checkpoint it came from); returns `out`."""
    model, _, _, manifest = load_checkpoint(checkpoint_dir)
    name = manifest["base_model"]["name"]
    write_safetensors(f"{out.rstrip('/')}/model.safetensors", model.state_dict())
    config = {"base_model": manifest["base_model"], "variant": manifest["variant"], "blocks": manifest["blocks"],
              "open_clip_config": open_clip.get_model_config(name),
              "checkpoint": lineage_entry(manifest, manifest_uri(checkpoint_dir))}
    write_bytes_atomic(f"{out.rstrip('/')}/config.json", json.dumps(config, indent=2).encode())
    print(f"merged model -> {out}/model.safetensors (+ config.json)")
    return out


def load_merged(folder: str, device: str = "cpu"):
    """(model, preprocess, tokenizer) from an exported folder; needs only open_clip and this package."""
    with open(f"{folder.rstrip('/')}/config.json") as f:
        config = json.load(f)
    name = config["base_model"]["name"]
    if name not in open_clip.list_models():  # a custom config travels inside the export
        tmp = tempfile.mkdtemp()
        with open(f"{tmp}/{name}.json", "w") as f:
            json.dump(config["open_clip_config"], f)
        open_clip.add_model_config(tmp)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    customize(model, config["variant"], config["blocks"]["k"] or None, seed=None)
    model.load_state_dict(read_safetensors(f"{folder.rstrip('/')}/model.safetensors"), strict=True)
    return model.eval().to(device), preprocess, open_clip.get_tokenizer(name)
