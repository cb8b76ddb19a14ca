"""The demo's chain, small: world → build → query → train → eval → report, and the lineage it leaves behind."""

import json
from pathlib import Path

import fsspec
from chain import ChainConfig, run_chain

from react_eval._manifests import manifest_id


def _follow(uri: str) -> dict:
    with fsspec.open(uri, "rt") as f:
        doc = json.load(f)
    assert doc["id"] == manifest_id(doc), f"{uri} does not match its id"
    return doc


def test_small_chain_flows_manifests_and_keeps_lineage_to_the_corpus(tmp_path, capsys):
    cfg = ChainConfig(out=tmp_path, preset="tiny", k=8, steps=3, batch_size=16)
    run = run_chain(cfg)
    printed = capsys.readouterr().out
    for step in ("react-index build", "react-index query", "react-tune train", "react-eval run", "react-eval report"):
        assert f"] {step}" in printed

    table = run["table"]
    assert set(table) == {"base", "customized"}
    for acc in table.values():
        assert all(0.0 <= acc[part] <= 1.0 for part in ("target", "rest", "all"))
    assert Path(run["report"]).read_text().count("<img") >= 1

    # eval result → checkpoint → retrieval set → index → embedding store → corpus shards
    result = next(json.loads(p.read_text()) for p in Path(run["results"]).glob("*.json")
                  if json.loads(p.read_text())["model_spec"].startswith("react:"))
    chain, doc = [], result
    while doc["lineage"]:
        (parent,) = doc["lineage"]
        nxt = _follow(parent["uri"])
        assert nxt["id"] == parent["id"] and nxt["kind"] == parent["kind"]
        chain.append(nxt["kind"])
        doc = nxt
    assert chain == ["react.checkpoint", "react.retrieval", "react.index", "react.embedding-store"]
    corpus = sorted(str(p) for p in (tmp_path / "world" / "corpus").glob("*.tar"))
    assert sorted(doc["inputs"]) == corpus

    # the retrieval set is the target domain, and the customized model was trained on it
    retrieval = _follow(f"{run['retrieval']}.json")
    assert retrieval["classes"] == list(cfg.target)
    checkpoint = _follow(f"{run['checkpoint']}/manifest.json")
    assert checkpoint["training"]["steps"] == 3

    # a rerun reuses every step's output
    before = {p: p.stat().st_mtime_ns for p in (Path(run["checkpoint"]) / "manifest.json", Path(run["retrieval"]))}
    run_chain(cfg)
    assert "(reused)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before
