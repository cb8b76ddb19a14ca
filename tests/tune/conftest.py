import pytest
from manifest_cases import write_retrieval_fixture
from toy_retrieval import toy_rows


@pytest.fixture(scope="session")
def toy_retrieval(tmp_path_factory, toy_root):
    """A retrieval set over the tiny toy corpus's first two shards (200 rows)."""
    return write_retrieval_fixture(tmp_path_factory.mktemp("retrieval"),
                                   toy_rows([toy_root / "corpus" / "00000.tar", toy_root / "corpus" / "00001.tar"]))
