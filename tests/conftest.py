import pytest

from toyworld import write_world


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """The tiny toy world: corpus shards and every eval set (generated once per test process)."""
    root = tmp_path_factory.mktemp("toy")
    write_world(root, "tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    """The demo-sized toy world (12,000 corpus pairs): the one the committed base CLIP was pretrained on."""
    root = tmp_path_factory.mktemp("demo-world")
    write_world(root, "demo", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A random-init react-tiny-vit saved as safetensors, as a user's --pretrained FILE (torch tests only)."""
    from toyworld.models import TINY, register_configs, save_random_init  # torch: imported only when used

    register_configs()
    return save_random_init(TINY, tmp_path_factory.mktemp("weights") / "tiny.safetensors", seed=0)


@pytest.fixture(scope="session")
def model_config():
    """The tiny model's open_clip config file, for --model-config."""
    from toyworld.models import CONFIG_DIR, TINY

    return str(CONFIG_DIR / f"{TINY}.json")
