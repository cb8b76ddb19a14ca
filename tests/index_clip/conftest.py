import pytest

from toyworld.models import CONFIG_DIR, TINY, register_configs, save_random_init


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A random-init react-tiny-vit saved as safetensors, as a user's --pretrained FILE."""
    register_configs()
    return save_random_init(TINY, tmp_path_factory.mktemp("weights") / "tiny.safetensors", seed=0)


@pytest.fixture(scope="session")
def model_args(tiny_weights):
    """CLI options that select the tiny model from a weights file."""
    return ["--model", TINY, "--pretrained", str(tiny_weights), "--model-config", str(CONFIG_DIR / f"{TINY}.json")]
