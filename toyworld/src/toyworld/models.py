"""Tiny open_clip configs for tests and the demo, and a random-init weights file made the way a user's would be.

Needs torch + open_clip_torch (imported here only, so the rest of toyworld stays torch-free).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
TINY = "react-tiny-vit"  # 32 px, 4-layer ViT, 2-layer text tower, embed_dim 64: unit tests
TOY = "react-toy-vit"  # 64 px, 6-layer ViT, 4-layer text tower, embed_dim 128: a bigger random-init model
BASE = "react-toy-base"  # react-tiny-vit's shape, pretrained on the toy corpus (toyworld.pretrain): the demo's base


def register_configs() -> list[str]:
    """Register the JSON configs in `model_configs/` with open_clip; returns their names."""
    if TINY not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def save_random_init(model_name: str, path: str | Path, seed: int = 0) -> Path:
    """Create `model_name` with seeded random weights and save its state dict as safetensors."""
    register_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def load_from_file(model_name: str, path: str | Path):
    """Load through open_clip's own pretrained-file path, as `--pretrained FILE` does for a user."""
    register_configs()
    return open_clip.create_model_and_transforms(model_name, pretrained=str(path))


def base_weights(preset: str = "demo") -> Path:
    """The committed toy-pretrained base CLIP (`BASE`) for a world preset (demo: the 16-shape world; longtail: the
    64-class world of reproduction v2), made by `python -m toyworld.pretrain` (see its docstring)."""
    path = WEIGHTS_DIR / base_weights_name(preset)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; recreate it with: python -m toyworld.pretrain ROOT --commit "
                                f"--preset {preset}")
    return path


def base_weights_name(preset: str) -> str:
    return f"{BASE}.safetensors" if preset == "demo" else f"{BASE}-{preset}.safetensors"
