"""`react-eval compare` as a CI gate on suites: the suite mean (ELEVATER's average, per task) with its own limit,
per-dataset gates unchanged, mismatched dataset sets named, and dataset names paired across spellings
(CLIP_benchmark's `wds/vtab/cifar10` and react-eval's `wds/wds_vtab-cifar10`)."""

import json

import pytest
from click.testing import CliRunner

from react_eval.cli import main
from react_eval.domain import dataset_key, dataset_metric
from react_eval.manifest import EVAL_RESULT, write_manifest

CLS = "zeroshot_classification"


def _ours(folder, dataset, task, metrics):
    body = {"dataset": dataset, "model": "m", "pretrained": "", "task": task, "metrics": metrics, "language": "en",
            "model_spec": "m", "dataset_uri": dataset, "dataset_checksum": "sha256:0", "n_samples": 10,
            "seconds": 1.0}
    write_manifest(str(folder / f"m__{dataset.replace('/', '_')}__{task}.json"), EVAL_RESULT, body)


def _clip_benchmark(folder, dataset, task, metrics):
    folder.mkdir(parents=True, exist_ok=True)
    dump = {"dataset": dataset, "model": "ViT-B-32", "pretrained": "laion400m_e32", "task": task,
            "metrics": metrics, "language": "en"}
    (folder / f"{dataset.replace('/', '_')}_{task}.json").write_text(json.dumps(dump))


def _suite(folder, accs: dict, task=CLS):
    for name, acc in accs.items():
        _ours(folder, name, task, {"acc1": acc})


def _compare(base, new, *options):
    out = CliRunner().invoke(main, ["compare", str(base), str(new), *options, "--json"])
    return out.exit_code, json.loads(out.output)


def test_the_suite_mean_gates_on_the_average_over_the_suites_datasets(tmp_path):
    _suite(tmp_path / "base", {"a": 0.50, "b": 0.60, "c": 0.70})
    # every dataset within the per-dataset limit (1 pt), but the mean drops 0.9 pt: (-0.9 -0.9 -0.9) / 3
    _suite(tmp_path / "new", {"a": 0.491, "b": 0.591, "c": 0.691})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--max-drop", "1", "--suite-mean",
                             "--suite-max-drop", "0.5")
    (suite,) = verdict["suites"]
    assert suite["task"] == CLS and suite["datasets"] == ["a", "b", "c"]
    assert suite["base"] == pytest.approx(0.6) and suite["new"] == pytest.approx(0.591)
    assert suite["delta"] == pytest.approx(-0.9)
    assert code == 1 and verdict["failures"] == [f"suite mean / {CLS}: dropped 0.90 pt over 3 datasets (limit 0.5)"]
    # the same results pass with a looser suite limit; the per-dataset gate alone passes too
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--max-drop", "1", "--suite-max-drop", "1")
    assert code == 0 and verdict["failures"] == [] and len(verdict["suites"]) == 1  # --suite-max-drop implies it
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--max-drop", "1")
    assert code == 0 and "suites" not in verdict


def test_a_suite_mean_that_holds_hides_no_per_dataset_drop(tmp_path):
    _suite(tmp_path / "base", {"a": 0.50, "b": 0.60, "c": 0.70})
    _suite(tmp_path / "new", {"a": 0.47, "b": 0.62, "c": 0.72})  # mean +0.33 pt, but a drops 3 pt
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--suite-mean")
    assert verdict["suites"][0]["delta"] == pytest.approx(1 / 3)
    assert code == 1 and verdict["failures"] == [f"a / {CLS} / acc1: dropped 3.00 pt (limit 0.5)"]


def test_the_suite_mean_is_per_task_with_each_datasets_main_metric(tmp_path):
    # pets has an ELEVATER metric (mean per-class recall): that is its score, not acc1
    _ours(tmp_path / "base", "pets", CLS, {"acc1": 0.10, "mean_per_class_recall": 0.50, "main_metric": 0.50})
    _ours(tmp_path / "base", "cifar10", CLS, {"acc1": 0.70})
    _ours(tmp_path / "base", "flickr", "zeroshot_retrieval",
          {"image_retrieval_recall@5": 0.40, "text_retrieval_recall@5": 0.60})
    _ours(tmp_path / "new", "pets", CLS, {"acc1": 0.90, "mean_per_class_recall": 0.52, "main_metric": 0.52})
    _ours(tmp_path / "new", "cifar10", CLS, {"acc1": 0.70})
    _ours(tmp_path / "new", "flickr", "zeroshot_retrieval",
          {"image_retrieval_recall@5": 0.40, "text_retrieval_recall@5": 0.58})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--suite-mean", "--max-drop", "5")
    suites = {s["task"]: s for s in verdict["suites"]}
    assert suites[CLS]["metrics"] == ["acc1", "main_metric"]  # cifar10, pets (sorted by dataset)
    assert suites[CLS]["base"] == pytest.approx(0.60) and suites[CLS]["delta"] == pytest.approx(1.0)
    retrieval = suites["zeroshot_retrieval"]  # one score per dataset: the mean of both recall@5
    assert retrieval["base"] == pytest.approx(0.50) and retrieval["delta"] == pytest.approx(-1.0)
    assert code == 1 and verdict["failures"] == ["suite mean / zeroshot_retrieval: dropped 1.00 pt over 1 datasets "
                                                 "(limit 0.5)"]


def test_suites_over_different_datasets_are_reported_and_fail(tmp_path):
    _suite(tmp_path / "base", {"a": 0.5, "b": 0.6})
    _suite(tmp_path / "new", {"a": 0.5, "c": 0.9})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--suite-mean")
    assert code == 1 and verdict["suites"] == []
    assert f"b / {CLS}: no result in {tmp_path / 'new'}" in verdict["failures"]  # the per-dataset gate
    (suite_failure,) = [f for f in verdict["failures"] if f.startswith("suite mean")]
    assert suite_failure.startswith(f"suite mean / {CLS}: the two sides evaluated different datasets "
                                    "(not in NEW: b; not in BASE: c)")
    # an extra dataset in NEW alone: per dataset nothing regressed, but the mean is over another set
    _suite(tmp_path / "new2", {"a": 0.5, "b": 0.6, "c": 0.9})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new2", "--suite-mean")
    assert code == 1 and len(verdict["failures"]) == 1 and "not in BASE: c" in verdict["failures"][0]
    code, verdict = _compare(tmp_path / "base", tmp_path / "new2")  # without the suite gate, extras are ignored
    assert code == 0


def test_a_suite_gate_that_compared_nothing_fails(tmp_path):
    _clip_benchmark(tmp_path / "base", "mscoco_captions", "captioning", {"bleu": 0.2})
    _clip_benchmark(tmp_path / "new", "mscoco_captions", "captioning", {"bleu": 0.2})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--suite-mean")
    assert code == 1 and verdict["suites"] == []
    assert any(f.startswith("suite mean / captioning: no score for mscoco_captions") for f in verdict["failures"])
    (tmp_path / "empty").mkdir()
    _suite(tmp_path / "new3", {"a": 0.5})
    code, verdict = _compare(tmp_path / "empty", tmp_path / "new3", "--suite-mean")
    assert code == 1 and "suite mean: nothing was compared (no task with results on both sides)" in verdict["failures"]


def test_the_table_shows_the_suite_mean(tmp_path):
    _suite(tmp_path / "base", {"a": 0.5, "b": 0.7})
    _suite(tmp_path / "new", {"a": 0.6, "b": 0.8})
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--suite-mean"])
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if line.startswith("suite mean (2)"))
    assert line.split()[-3:] == ["60.00", "70.00", "+10.00"] and "gate: passed" in out.output


@pytest.mark.parametrize("a, b", [("wds/vtab/cifar10", "wds/wds_vtab-cifar10"), ("wds/cifar10", "wds/wds_cifar10"),
                                  ("cifar10", "wds/cifar10"), ("wds/fgvc_aircraft", "wds/wds_fgvc-aircraft"),
                                  ("Pets", "wds/wds_pets")])
def test_dataset_names_pair_across_clip_benchmark_and_react_eval_spellings(a, b):
    assert dataset_key(a) == dataset_key(b)


def test_different_datasets_keep_different_keys():
    keys = {dataset_key(n) for n in ("cifar10", "cifar100", "wds/vtab/cifar100", "vtab-cifar10", "imagenet1k")}
    assert len(keys) == 5


def test_the_elevater_metric_is_found_under_wds_names():
    for name in ("pets", "wds/vtab/pets", "wds/wds_vtab-pets", "wds/fgvc_aircraft", "wds/wds_fgvc_aircraft"):
        assert dataset_metric(name) == "mean_per_class_recall", name
    assert dataset_metric("wds/voc2007_multilabel") == "mean_average_precision_11pt"
    assert dataset_metric("wds/vtab/cifar10") is None


def test_compare_pairs_a_clip_benchmark_wds_baseline_with_react_eval_results(tmp_path):
    _clip_benchmark(tmp_path / "base", "wds/vtab/cifar10", CLS, {"acc1": 0.80, "acc5": 0.95})
    _clip_benchmark(tmp_path / "base", "wds/vtab/pets", CLS, {"acc1": 0.60, "mean_per_class_recall": 0.70})
    _ours(tmp_path / "new", "wds/wds_vtab-cifar10", CLS, {"acc1": 0.81})
    _ours(tmp_path / "new", "wds/wds_vtab-pets", CLS, {"acc1": 0.5, "mean_per_class_recall": 0.71,
                                                      "main_metric": 0.71})
    code, verdict = _compare(tmp_path / "base", tmp_path / "new", "--suite-mean")
    compared = {(d, m): round(delta, 6) for d, _, m, _, _, delta in verdict["rows"]}
    assert compared == {("wds/vtab/cifar10", "acc1"): 1.0, ("wds/vtab/pets", "main_metric"): 1.0}
    assert code == 0 and verdict["failures"] == [] and verdict["suites"][0]["delta"] == pytest.approx(1.0)
    # two spellings of one dataset in one folder: which is the base? named, and the gate fails
    _ours(tmp_path / "new", "wds/vtab/cifar10", CLS, {"acc1": 0.81})
    code, verdict = _compare(tmp_path / "new", tmp_path / "new")
    assert code == 1 and any(f.startswith("wds/vtab/cifar10 = wds/wds_vtab-cifar10 / zeroshot_classification: ")
                             and "holds 2 results" in f for f in verdict["failures"])


def test_results_fingerprinted_by_another_react_eval_say_so(tmp_path):
    for side, checksum in (("base", "sha256:abc"), ("new", "sha256-listing:abc")):
        body = {"dataset": "wds/pets", "model": "m", "pretrained": "", "task": CLS, "metrics": {"acc1": 0.5},
                "language": "en", "model_spec": "m", "dataset_uri": "x", "dataset_checksum": checksum,
                "n_samples": 10, "seconds": 1.0}
        write_manifest(str(tmp_path / side / "r.json"), EVAL_RESULT, body)
    code, verdict = _compare(tmp_path / "base", tmp_path / "new")
    assert code == 1 and verdict["failures"][0] == (
        "wds/pets / zeroshot_classification: the dataset was fingerprinted two ways (sha256 in BASE, sha256-listing "
        "in NEW: results of different react-eval versions); re-run BASE with this react-eval to compare")


def test_run_suite_then_gate_on_its_mean(toy_root, tiny_weights, model_config, tmp_path):
    """The whole flow: `run --suite` over two datasets (the suite lists no models: --model is evaluated), then
    `compare --suite-mean` of the results against themselves passes and against a worse copy fails."""
    from toyworld.models import TINY

    suite = tmp_path / "suite.yaml"
    suite.write_text(f"datasets:\n  - {{dataset: {toy_root / 'eval' / 'classification'}, task: {CLS}}}\n"
                     f"  - {{dataset: {toy_root / 'eval' / 'classification_wds'}, task: {CLS}, templates: "
                     "simple_imagenet}\n")
    args = ["run", "--model", TINY, "--pretrained", str(tiny_weights), "--model-config", model_config, "--suite",
            str(suite), "--workers", "0", "--out", str(tmp_path / "base")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    results = {p.name: json.loads(p.read_text()) for p in (tmp_path / "base").glob("*.json")}
    assert sorted(r["dataset"] for r in results.values()) == ["classification", "wds/classification_wds"]
    wds = next(r for r in results.values() if r["dataset"].startswith("wds/"))
    assert wds["options"]["templates"] == "simple_imagenet" and wds["dataset_checksum"].startswith("sha256-listing:")
    code, verdict = _compare(tmp_path / "base", tmp_path / "base", "--suite-mean", "--suite-max-drop", "0")
    assert code == 0 and verdict["suites"][0]["datasets"] == ["classification", "wds/classification_wds"]
    worse = tmp_path / "worse"
    worse.mkdir()
    for name, r in results.items():
        metrics = {k: (v - 0.02 if k == "acc1" else v) for k, v in r["metrics"].items()}
        body = {k: r[k] for k in ("dataset", "model", "pretrained", "task", "language", "model_spec", "dataset_uri",
                                  "dataset_checksum", "n_samples", "seconds")} | {"metrics": metrics}
        write_manifest(str(worse / name), EVAL_RESULT, body)
    code, verdict = _compare(tmp_path / "base", worse, "--max-drop", "5", "--suite-max-drop", "1")
    assert code == 1 and verdict["failures"] == [f"suite mean / {CLS}: dropped 2.00 pt over 2 datasets (limit 1.0)"]
    # a suite entry with an option react-eval does not have is an error naming it, before anything runs
    suite.write_text(f"datasets:\n  - {{dataset: {toy_root / 'eval' / 'classification'}, task: {CLS}, "
                     "template: pets}\n")
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 1 and "datasets[0] has unknown option(s) template" in bad.output
