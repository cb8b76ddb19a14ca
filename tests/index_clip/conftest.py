import pytest

from toyworld.models import TINY


@pytest.fixture(scope="session")
def model_args(tiny_weights, model_config):
    """CLI options that select the tiny model from a weights file."""
    return ["--model", TINY, "--pretrained", str(tiny_weights), "--model-config", model_config]
