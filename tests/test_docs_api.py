"""docs/api.md is what scripts/gen_api_docs.py generates now from the three packages' docstrings."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts" / "gen_api_docs.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


def test_api_reference_is_generated_and_current():
    current = (ROOT / "docs" / "api.md").read_text() if (ROOT / "docs" / "api.md").exists() else ""
    assert current == gen.render(), "docs/api.md is stale: run python scripts/gen_api_docs.py"


def test_api_reference_documents_every_public_name():
    import react_index

    text = gen.render()
    assert text.startswith(gen.HEADER)
    for name in react_index.__all__:
        assert f"### `react_index.{name}`" in text
    assert "build_index(store_uri: str, out: str, *, max_memory" in text
    assert "(no docstring)" not in text.split("## `react_tune`")[0]  # every react-index name is documented
