"""react-tune train --variant linear-head (REAL-Linear) and its evaluation in react-eval (issue 16, item 3)."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from manifest_cases import write_retrieval_fixture
from toy_retrieval import toy_rows

import react_eval.tasks.zeroshot as zeroshot_task
import react_tune.data
from react_eval.datasets import DatasetError, load_classification
from react_eval.loaders import load
from react_eval.runner import run
from react_tune import load_model
from react_tune._manifests import UserError
from react_tune.cli import main as tune_cli
from react_tune.linear_head import GRID, ensemble, held_out_samples
from react_tune.manifest import ManifestError
from react_tune.train import TrainConfig, train
from toyworld.models import BASE, base_weights, register_configs


@pytest.fixture(scope="module")
def weights():
    register_configs()
    return str(base_weights())


def _config(manifest, weights, out, **kw):
    return TrainConfig(retrieval=str(manifest), model=BASE, pretrained=weights, out=str(out), variant="linear-head",
                       **({"batch_size": 64, "workers": 0} | kw))


@pytest.fixture(scope="module")
def head(toy_retrieval, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    return out, train(_config(toy_retrieval, weights, out))


def test_training_is_deterministic_and_the_weight_is_chosen_on_the_held_out_slice(toy_retrieval, weights, head,
                                                                                   tmp_path, monkeypatch):
    out, manifest = head
    read = []
    real = react_tune.data.read_image_bytes
    monkeypatch.setattr(react_tune.data, "read_image_bytes", lambda uri, *a: read.append(uri) or real(uri, *a))
    again = train(_config(toy_retrieval, weights, tmp_path / "again"))
    assert (tmp_path / "again" / "head.safetensors").read_bytes() == (out / "head.safetensors").read_bytes()
    assert again["head"] == manifest["head"] and again["weights"] == manifest["weights"]
    # only the retrieval set's images are read (eval data is never an input); each distinct image once
    shards = {r["image_uri"] for r in pa.parquet.read_table(toy_retrieval).to_pylist()}
    assert set(read) <= shards and len(read) == manifest["training"]["samples_seen"] + manifest["head"]["held_out"][
        "samples"]
    h = manifest["head"]
    assert manifest["variant"] == "linear-head" and manifest["weights"]["file"] == "head.safetensors"
    assert manifest["lineage"][0]["kind"] == "react.retrieval"
    assert h["classes"] == json.loads((toy_retrieval.parent / "set.parquet.json").read_text())["classes"]
    assert h["templates"] == ["a photo of a {c}."] and h["templates_source"] == "retrieval manifest"
    held = h["held_out"]
    assert held["fraction"] == 0.1 and held["samples"] == 20 and held["rows"] == 20
    assert h["train"]["rows"] + held["rows"] == 200 and held["grid"] == list(GRID)
    best = max(range(len(GRID)), key=lambda i: (held["scores"][i], -i))
    assert h["ensemble_weight"] == GRID[best] and held["accuracy"]["ensemble"] == max(held["scores"])
    assert held["accuracy"]["zero_shot"] == held["scores"][0] and held["accuracy"]["head"] == held["scores"][-1]
    assert held["accuracy"]["ensemble"] >= held["accuracy"]["zero_shot"]
    other = train(_config(toy_retrieval, weights, tmp_path / "seed1", seed=1))
    assert other["head"]["held_out"]["scores"] != held["scores"] or other["weights"] != manifest["weights"]


def test_held_out_split_is_by_sample_and_seeded():
    a, b = held_out_samples(200, 0.1, 0), held_out_samples(200, 0.1, 0)
    assert (a == b).all() and a.sum() == 20 and (held_out_samples(200, 0.1, 1) != a).any()
    assert held_out_samples(3, 0.1, 0).sum() == 1  # at least one, never all


def test_checkpoint_evaluates_in_react_eval_with_its_classes_mapped_by_name(toy_root, head, weights, tmp_path):
    out, manifest = head
    dataset = str(toy_root / "eval" / "classification")
    assert load_classification(dataset).classnames != manifest["head"]["classes"]  # another order: mapped
    result = run(f"react:{out}", dataset, task="zeroshot_classification", out=str(tmp_path), workers=0)
    used = result["details"]["classifier"]
    assert used["used"] and used["kind"] == "linear-head" and used["class_order"] == "mapped by name"
    assert used["ensemble_weight"] == manifest["head"]["ensemble_weight"]
    assert result["model"].startswith("react:") and result["lineage"][0]["id"] == manifest["id"]
    retrieval = run(f"react:{out}", str(toy_root / "eval" / "retrieval" / "captions.json"), task="zeroshot_retrieval",
                    out=str(tmp_path), workers=0)
    assert retrieval["details"]["classifier"]["used"] is False
    with pytest.raises(ManifestError, match="linear-head checkpoint .*react-eval run --model react:CKPT"):
        load_model(str(out))


def test_a_head_whose_classes_differ_from_the_dataset_is_refused_naming_them(toy_root, weights, tmp_path):
    table = toy_rows([toy_root / "corpus" / "00000.tar"])
    keep = pa.compute.is_in(table.column("class_name"), value_set=pa.array(["circle", "square", "triangle"]))
    rows = write_retrieval_fixture(tmp_path / "three", table.filter(keep))
    train(_config(rows, weights, tmp_path / "ckpt", held_out=0.2))
    with pytest.raises(DatasetError, match=r"13 dataset class\(es\) the head was not trained for: arrow, chevron"):
        run(f"react:{tmp_path / 'ckpt'}", str(toy_root / "eval" / "classification"), task="zeroshot_classification",
            out=str(tmp_path / "res"), workers=0)
    assert not list((tmp_path / "res").glob("*.json")) if (tmp_path / "res").exists() else True


def test_weight_zero_is_the_zero_shot_classifier_exactly(toy_root, head, weights, tmp_path, monkeypatch):
    out, _ = head
    seen = []
    real = zeroshot_task.classification_metrics
    monkeypatch.setattr(zeroshot_task, "classification_metrics", lambda logits, *a: seen.append(logits) or
                        real(logits, *a))
    ds = load_classification(str(toy_root / "eval" / "classification"))
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {c}.\n")  # the retrieval set's: the head's zero-shot part
    trained = load(f"react:{out}")
    trained.classifier.ensemble_weight = 0.0
    zero, zero_details = zeroshot_task.zeroshot_classification(trained, ds, workers=0)
    base, base_details = zeroshot_task.zeroshot_classification(load(BASE, weights), ds, str(templates), workers=0)
    assert np.array_equal(seen[0], seen[1]) and zero == base
    assert zero_details["recall"] == base_details["recall"] and "classifier" not in base_details
    trained.classifier.ensemble_weight = 1.0  # the head alone does change the logits
    zeroshot_task.zeroshot_classification(trained, ds, workers=0)
    assert not np.array_equal(seen[2], seen[0])
    x = np.ones((2, 3), np.float32)
    assert ensemble(x, -x, 0) is x


def test_cli_trains_with_templates_and_counts_unreadable_images(toy_root, toy_retrieval, weights, tmp_path):
    table = pa.parquet.read_table(toy_retrieval)
    uris = table.column("image_uri").to_pylist()
    uris[0] = str(tmp_path / "gone.tar")
    rows = write_retrieval_fixture(tmp_path / "set", table.set_column(8, "image_uri", pa.array(uris)))
    templates = toy_root / "eval" / "classification" / "templates.txt"
    result = CliRunner().invoke(tune_cli, ["train", str(rows), "--model", BASE, "--pretrained", weights,
                                           "--out", str(tmp_path / "ckpt"), "--variant", "linear-head", "--workers",
                                           "0", "--templates", str(templates), "--steps", "20", "--held-out", "0.2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["training"]["skipped"] == {"missing_image": 1, "corrupt_image": 0}
    assert manifest["head"]["templates_source"] == str(templates) and len(manifest["head"]["templates"]) == 5
    assert manifest["training"]["steps"] == 20 and manifest["head"]["held_out"]["samples"] == 40
    refused = CliRunner().invoke(tune_cli, ["train", str(rows), "--model", BASE, "--pretrained", weights,
                                            "--out", str(tmp_path / "k"), "--variant", "linear-head", "--blocks", "2"])
    assert refused.exit_code == 1 and "--blocks places gated blocks" in refused.output
    gone = write_retrieval_fixture(tmp_path / "gone", table.set_column(8, "image_uri",
                                                                       pa.array([str(tmp_path / "x.tar")] * len(uris))))
    with pytest.raises(UserError, match="none of the 200 rows' images could be read"):
        train(_config(gone, weights, tmp_path / "none"))


def test_docs_example_carries_exactly_the_keys_the_writer_writes(head):
    from manifest_cases import doc_block, key_paths

    _, manifest = head
    shown = key_paths(doc_block('"variant": "linear-head"'))
    written = key_paths(manifest)
    assert {p for p in written if not p.startswith("training.config.")} == \
        {p for p in shown if not p.startswith("training.config.")}
