import pytest
from stores import make_store


@pytest.fixture(scope="module")
def store_20k(tmp_path_factory):
    """20,000 clustered 64-d vectors (image + text) in 4 store shards."""
    return make_store(tmp_path_factory.mktemp("store20k"), 20_000, 64, 5_000)
