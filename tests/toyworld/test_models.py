import open_clip
import pytest
import torch
from safetensors import safe_open

from toyworld.models import TINY, load_from_file, register_configs, save_random_init


def test_tiny_configs_register_with_open_clip():
    names = register_configs()
    assert TINY in names and set(names) <= set(open_clip.list_models())
    cfg = open_clip.get_model_config(TINY)
    assert cfg["embed_dim"] == 64 and cfg["vision_cfg"]["image_size"] == 32 and cfg["text_cfg"]["layers"] == 2


def test_random_init_file_loads_through_open_clips_pretrained_path(tmp_path):
    path = save_random_init(TINY, tmp_path / "tiny.safetensors", seed=3)
    with safe_open(str(path), "pt") as f:  # a safetensors file, no pickle inside
        saved = {k: f.get_tensor(k) for k in f.keys()}
    model, _, preprocess = load_from_file(TINY, path)
    state = model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    fresh = open_clip.create_model(TINY)  # different random weights: the file really was loaded
    assert not torch.equal(fresh.state_dict()["visual.conv1.weight"], state["visual.conv1.weight"])

    from PIL import Image

    image = preprocess(Image.new("RGB", (50, 40), (200, 10, 10))).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    tokens = open_clip.get_tokenizer(TINY)(["a red star", "a ring"])
    assert tokens.shape == (2, 32)
    with torch.no_grad():
        assert model.encode_image(image).shape == (1, 64) and model.encode_text(tokens).shape == (2, 64)


def test_same_seed_same_weights_file(tmp_path):
    a = save_random_init(TINY, tmp_path / "a.safetensors", seed=1).read_bytes()
    b = save_random_init(TINY, tmp_path / "b.safetensors", seed=1).read_bytes()
    c = save_random_init(TINY, tmp_path / "c.safetensors", seed=2).read_bytes()
    assert a == b != c


def test_a_missing_weights_file_is_an_error(tmp_path):
    register_configs()
    with pytest.raises(RuntimeError):
        open_clip.create_model(TINY, pretrained=str(tmp_path / "nope.safetensors"))
