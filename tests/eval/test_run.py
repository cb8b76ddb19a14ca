import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from react_eval import run
from react_eval.cli import main
from react_eval.features import zeroshot_classifier
from react_eval.loaders import load
from react_eval.manifest import EVAL_RESULT, ManifestError, read_manifest, write_manifest
from toyworld.models import TINY

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_zeroshot_classifier_is_the_normalised_template_ensemble(tiny_weights):
    loaded = load(TINY, str(tiny_weights))
    names, templates = ["star", "ring"], ["a photo of a {c}.", "clipart of a {c}."]
    ours = zeroshot_classifier(loaded, names, templates)
    model, tokenizer = loaded.model, open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        direct = []
        for c in names:
            e = model.encode_text(tokenizer([t.format(c=c) for t in templates]))
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(0)
            direct.append((m / m.norm()).numpy())
    assert np.allclose(ours, np.stack(direct), atol=1e-6)


def test_run_writes_clip_benchmark_compatible_results_and_skips_reruns(toy_root, tiny_weights, tmp_path, capsys):
    folder = run(TINY, str(toy_root / "eval" / "classification"), task="zeroshot_classification", out=str(tmp_path),
                 pretrained=str(tiny_weights), workers=0)
    wds = run(TINY, str(toy_root / "eval" / "classification_wds"), task="zeroshot_classification", out=str(tmp_path),
              pretrained=str(tiny_weights), workers=0)
    assert folder["metrics"] == wds["metrics"]  # the same images through both layouts
    assert folder["n_samples"] == 64 and 0 <= folder["metrics"]["acc1"] <= 1
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(files) == 2
    plain = json.loads((tmp_path / files[0]).read_text())
    assert {"dataset", "model", "pretrained", "task", "metrics", "language"} <= set(plain)
    assert plain["details"]["recall"].keys() == set(json.loads(json.dumps(plain["details"]["recall"])))
    again = run(TINY, str(toy_root / "eval" / "classification"), task="zeroshot_classification", out=str(tmp_path),
                pretrained=str(tiny_weights), workers=0)
    assert again["id"] == folder["id"] and "already evaluated, skipping" in capsys.readouterr().out
    retrieval = run(TINY, str(toy_root / "eval" / "retrieval" / "captions.json"), task="zeroshot_retrieval",
                    out=str(tmp_path), pretrained=str(tiny_weights), workers=0)
    assert set(retrieval["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}
    det = run(TINY, str(toy_root / "eval" / "detection" / "annotations.json"), task="detection", out=str(tmp_path),
              pretrained=str(tiny_weights), workers=0)
    assert {"AP", "AP50", "AP50_base", "AP50_novel", "mean_per_class_top1", "mean_per_class_top1_novel"} \
        <= set(det["metrics"])
    probe = run(TINY, str(toy_root / "eval" / "classification"), task="linear_probe", out=str(tmp_path),
                pretrained=str(tiny_weights),
                workers=0, train_dataset=str(toy_root / "eval" / "classification_train"), shots=2, seeds=(0, 1))
    assert probe["metrics"]["seeds"] == 2 and 0 <= probe["metrics"]["acc1"] <= 1


def _react_checkpoint(root, tiny_weights):
    """A checkpoint written per docs/manifests.md by hand: gated blocks with open gates, + its manifest."""
    from manifest_cases import spec_id

    from react_tune.model import customize, load_base, trainable_state

    model, *_ = load_base(TINY, str(tiny_weights))
    blocks = customize(model, "gated-image", k=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "alpha_" in name:
                p.fill_(0.5)
    tensors = {k: v.contiguous() for k, v in trainable_state(model).items()}
    root.mkdir()
    save_file(tensors, str(root / "blocks.safetensors"))
    doc = {"kind": "react.checkpoint", "version": 1, "id": "", "created": "2026-11-25T00:00:00+00:00",
           "producer": {"name": "fixture", "version": "0"}, "lineage": [],
           "base_model": {"name": TINY, "pretrained": str(tiny_weights), "pretrained_sha256": None},
           "variant": "gated-image", "blocks": blocks,
           "weights": {"file": "blocks.safetensors",
                       "sha256": "sha256:" + hashlib.sha256((root / "blocks.safetensors").read_bytes()).hexdigest(),
                       "parameters": sum(t.numel() for t in tensors.values())},
           "training": {"steps": 0, "samples_seen": 0, "final_loss": None, "skipped": {}, "config": {}}}
    doc["id"] = spec_id(doc)
    (root / "manifest.json").write_text(json.dumps(doc))
    return root


def test_react_checkpoints_load_through_the_entry_point_or_say_what_is_missing(toy_root, tiny_weights, tmp_path,
                                                                               monkeypatch):
    ckpt = _react_checkpoint(tmp_path / "ckpt", tiny_weights)
    result = run(f"react:{ckpt}", str(toy_root / "eval" / "classification"), task="zeroshot_classification",
                 out=str(tmp_path / "out"), workers=0)
    assert result["lineage"][0]["kind"] == "react.checkpoint"
    base = run(TINY, str(toy_root / "eval" / "classification"), task="zeroshot_classification",
               out=str(tmp_path / "base"), pretrained=str(tiny_weights), workers=0)
    assert result["metrics"] != base["metrics"]  # open gates change the model
    # CLIP_benchmark's `build` keys rows by `model + " " + pretrained`: the two must not merge. The name is the
    # loader's (react-tune: react:<checkpoint id>:<base>), the pretrained tag the base's.
    assert result["model"] + " " + result["pretrained"] != base["model"] + " " + base["pretrained"]
    assert result["model"].startswith("react:") and result["model"].endswith(f":{TINY}")
    assert result["pretrained"] == base["pretrained"] == str(tiny_weights)
    monkeypatch.setattr("react_eval.loaders.installed_loaders", lambda: {})
    with pytest.raises(ManifestError, match=r"no model loader named 'react' is installed \(pip install react-tune "
                                            r"provides 'react'\); installed loaders: open_clip"):
        load(f"react:{ckpt}")


def _result(folder, dataset, task, metrics):
    body = {"dataset": dataset, "model": "m", "pretrained": "", "task": task, "metrics": metrics, "language": "en",
            "model_spec": "m", "dataset_uri": dataset, "dataset_checksum": "sha256:0", "n_samples": 10, "seconds": 1.0}
    write_manifest(str(folder / f"{dataset}__{task}.json"), EVAL_RESULT, body)


def test_compare_is_a_ci_gate(tmp_path):
    for name, acc in (("base", 0.80), ("ok", 0.799), ("worse", 0.78)):
        _result(tmp_path / name, "pets", "zeroshot_classification", {"acc1": acc, "acc5": 0.9})
        _result(tmp_path / name, "flickr", "zeroshot_retrieval",
                {"image_retrieval_recall@5": 0.5, "text_retrieval_recall@5": 0.6})
    runner = CliRunner()
    ok = runner.invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "ok"), "--max-drop", "0.5"])
    assert ok.exit_code == 0 and "gate: passed" in ok.output and "-0.10" in ok.output
    bad = runner.invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--max-drop", "0.5"])
    assert bad.exit_code == 1 and "FAIL pets / zeroshot_classification / acc1: dropped 2.00 pt" in bad.output
    gain = runner.invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "ok"), "--min-gain", "0.1"])
    assert gain.exit_code == 1 and "gained" in gain.output
    (tmp_path / "empty").mkdir()
    gone = runner.invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "empty")])
    assert gone.exit_code == 1 and "no result in" in gone.output


def test_report_renders_tables_and_charts_in_chromium(toy_root, tiny_weights, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for this test (nox -s tests installs it)"
    run(TINY, str(toy_root / "eval" / "classification"), task="zeroshot_classification", out=str(tmp_path / "a"),
        pretrained=str(tiny_weights), workers=0)
    out = CliRunner().invoke(main, ["report", str(tmp_path / "a"), "--html", str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    assert "<h2>zeroshot_classification</h2>" in page and page.count("data:image/png;base64,") == 1
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--virtual-time-budget=5000",
                          "--dump-dom", f"file://{tmp_path / 'r.html'}"], capture_output=True, text=True, timeout=120)
    assert 'data-images-loaded="1"' in dom.stdout


def test_cli_run_and_bad_input(toy_root, tiny_weights, model_config, tmp_path):
    out = subprocess.run([sys.executable, "-m", "react_eval.cli", "run", "--model", TINY, "--pretrained",
                          str(tiny_weights), "--model-config", model_config, "--dataset",
                          str(toy_root / "eval" / "classification"), "--task", "zeroshot_classification",
                          "--workers", "0", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "result -> " in out.stdout
    (result,) = tmp_path.glob("*.json")
    assert read_manifest(str(result), EVAL_RESULT)["task"] == "zeroshot_classification"
    bad = CliRunner().invoke(main, ["run", "--model", TINY, "--dataset", str(tmp_path / "nope"), "--task",
                                    "zeroshot_classification", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "nope: no such dataset" in bad.output


def test_real_prompt_prompts_each_class_by_its_most_frequent_name(toy_root, tiny_weights, tmp_path):
    """--prompt-names most-frequent --frequency FILE: the classifier of each class is built from its most frequent
    name (here: a frequency file naming a synonym), exactly as if the dataset's classes had been called so — but
    the result keeps the dataset's class names, goes to its own file and says which names it used."""
    data = str(toy_root / "eval" / "classification")
    plain = run(TINY, data, task="zeroshot_classification", out=str(tmp_path / "plain"), pretrained=str(tiny_weights),
                workers=0)
    names = list(plain["details"]["recall"])
    alias = {c: (f"{c} shape" if i % 2 else c) for i, c in enumerate(names)}  # every other class renamed
    (tmp_path / "freq.csv").write_text("class_name,count,most_frequent\n"
                                       + "".join(f"{c},{10 + i},{alias[c]}\n" for i, c in enumerate(names)))
    (tmp_path / "renamed.txt").write_text("".join(f"{alias[c]}\n" for c in names))
    real = run(TINY, data, task="zeroshot_classification", out=str(tmp_path / "real"), pretrained=str(tiny_weights),
               workers=0, prompt_names="most-frequent", frequency=str(tmp_path / "freq.csv"))
    renamed = run(TINY, data, task="zeroshot_classification", out=str(tmp_path / "renamed"),
                  pretrained=str(tiny_weights), workers=0, classnames=str(tmp_path / "renamed.txt"))
    assert real["metrics"] == renamed["metrics"] and real["metrics"] != plain["metrics"]
    assert list(real["details"]["recall"]) == names  # labelled by the dataset's own names
    assert list(real["details"]["recall"].values()) == list(renamed["details"]["recall"].values())
    assert real["details"]["prompt_names"]["renamed"] == {c: a for c, a in alias.items() if c != a}
    assert real["model"] == f"{plain['model']}+real-prompt"
    assert next(p.name for p in (tmp_path / "real").glob("*.json")).endswith("__real-prompt.json")
    with pytest.raises(Exception, match="needs --frequency"):
        run(TINY, data, task="zeroshot_classification", out=str(tmp_path / "x"), pretrained=str(tiny_weights),
            workers=0, prompt_names="most-frequent")
