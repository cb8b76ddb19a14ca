import pytest

from toyworld.models import CONFIG_DIR, TINY, register_configs, save_random_init


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    register_configs()
    return save_random_init(TINY, tmp_path_factory.mktemp("weights") / "tiny.safetensors", seed=0)


@pytest.fixture(scope="session")
def model_config():
    return str(CONFIG_DIR / f"{TINY}.json")
