import pytest

from toyworld import write_world


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """The tiny toy world: corpus shards and every eval set (generated once per test process)."""
    root = tmp_path_factory.mktemp("toy")
    write_world(root, "tiny", seed=0)
    return root
