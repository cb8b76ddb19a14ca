"""Honest answers (issue 11): a wrong label order, an empty comparison, an unreadable image or annotation, a
bug or a dropped option is an error that names its cause, never a plausible number with exit code 0."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from react_eval import run
from react_eval.cli import main
from react_eval.datasets import DatasetError, load_classification, load_detection
from react_eval.features import BadImageError, encode_images
from react_eval.loaders import load
from react_eval.manifest import EVAL_RESULT, write_manifest
from toyworld import World
from toyworld.models import BASE, TINY, base_weights, register_configs


@pytest.fixture()
def folder(toy_root, tmp_path):
    """A private copy of the toy classification folder (16 shape classes × 4 images, names sorted)."""
    return shutil.copytree(toy_root / "eval" / "classification", tmp_path / "cls")


def _zeroshot(dataset, out, **options):
    register_configs()
    return run(BASE, str(dataset), task="zeroshot_classification", out=str(out), pretrained=str(base_weights()),
               workers=0, **options)


# --- 1. labels of image folders and tables ---------------------------------------------------------------------

def test_class_folders_are_matched_to_class_names_by_name_whatever_the_file_order(toy_root, folder, tmp_path):
    truth = _zeroshot(toy_root / "eval" / "classification", tmp_path / "a")  # classnames.txt in sorted order
    (folder / "classnames.txt").write_text("\n".join(World().shapes) + "\n")  # definition order, not sorted
    (folder / "heart").rename(folder / "Heart")  # case, '_', '-' and spaces do not matter
    result = _zeroshot(folder, tmp_path / "b")
    assert result["metrics"]["acc1"] == truth["metrics"]["acc1"] > 0.3  # the pretrained base, scored honestly
    assert result["details"]["recall"] == truth["details"]["recall"]
    assert result["details"]["labels"]["rule"] == "by_name"
    ds = load_classification(str(folder))
    assert {ds.classnames[label] for ref, label in zip(ds.images, ds.labels, strict=True)
            if "/Heart/" in ref[1]} == {"heart"}


def test_unmatched_folder_names_keep_the_sorted_rule_and_say_so(toy_root, folder, tmp_path, capsys):
    for i, d in enumerate(sorted(p.name for p in folder.iterdir() if p.is_dir())):
        (folder / d).rename(folder / f"c{i:02d}")
    result = _zeroshot(folder, tmp_path / "out")
    assert result["details"]["labels"]["rule"] == "sorted_folders"
    assert "ImageFolder's rule" in result["details"]["labels"]["how"]
    assert "ImageFolder's rule" in capsys.readouterr().out


def test_numbered_class_folders_are_labelled_by_number_not_text_order(toy_root, folder, tmp_path):
    truth = _zeroshot(toy_root / "eval" / "classification", tmp_path / "a")
    for i, d in enumerate(sorted(p.name for p in folder.iterdir() if p.is_dir())):
        (folder / d).rename(folder / str(i))  # "10" sorts before "2" as text
    assert _zeroshot(folder, tmp_path / "b")["details"]["recall"] == truth["details"]["recall"]
    ds = load_classification(str(folder))
    assert ds.label_rule == "folder_number"
    assert {label for ref, label in zip(ds.images, ds.labels, strict=True) if "/10/" in ref[1]} == {10}


def test_folders_that_match_names_in_another_order_are_refused(folder):
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    (folder / names[0]).rename(folder / "zz_unknown")  # one folder no longer matches, the others do ...
    (folder / "classnames.txt").write_text("\n".join(reversed(names)) + "\n")  # ... in another order
    with pytest.raises(DatasetError, match=r"do not line up with .*classnames.txt: folder '\w+' would be named"):
        load_classification(str(folder))


def test_an_empty_class_folder_is_refused(folder):
    (folder / "classnames.txt").unlink()
    (folder / "zebra").mkdir()
    with pytest.raises(DatasetError, match=r"class folder\(s\) with no images .*: zebra;"):
        load_classification(str(folder))


def test_table_labels_given_as_names_are_matched_and_an_unknown_name_names_its_row(toy_root, tmp_path):
    src = toy_root / "eval" / "classification"
    images = sorted(src.glob("*/*.jpg"))
    (tmp_path / "classnames.txt").write_text("\n".join(World().shapes) + "\n")
    shutil.copy(src / "templates.txt", tmp_path / "templates.txt")  # the folder's own templates, as for truth
    rows = [f"{p},{p.parent.name.upper()}" for p in images]
    (tmp_path / "test.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    truth = _zeroshot(src, tmp_path / "a")
    result = _zeroshot(tmp_path / "test.csv", tmp_path / "b")
    assert result["details"]["labels"]["rule"] == "label_name"
    assert result["details"]["recall"] == truth["details"]["recall"]
    rows[2] = f"{images[2]},hexagonal"
    (tmp_path / "test.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"test.csv: row 3 \(path .*\): label 'hexagonal' is not a class name"):
        load_classification(str(tmp_path / "test.csv"))
    (tmp_path / "test.csv").write_text(f"path,label\n{images[0]},16\n")
    with pytest.raises(DatasetError, match=r"row 1 .*label 16 is not a class index 0..15"):
        load_classification(str(tmp_path / "test.csv"))


# --- 2. compare and report: nothing compared fails; CLIP_benchmark's result files are read --------------------

def _ours(folder, dataset, task, metrics, checksum="sha256:0", model="m"):
    body = {"dataset": dataset, "model": model, "pretrained": "", "task": task, "metrics": metrics, "language": "en",
            "model_spec": "m", "dataset_uri": dataset, "dataset_checksum": checksum, "n_samples": 10,
            "seconds": 1.0}
    write_manifest(str(folder / f"{model}__{dataset}__{task}.json"), EVAL_RESULT, body)


def _clip_benchmark(folder, dataset, task, metrics, model="ViT-B-32", pretrained="laion400m_e32"):
    """A result file exactly as CLIP_benchmark 1.6.2's cli.py writes it (`json.dump(dump, f)`, NaN and all)."""
    dump = {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
            "language": "en"}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{dataset}_{pretrained}_{model}_en_{task}.json", "w") as f:
        json.dump(dump, f)


def _compare(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_compare_fails_when_a_side_is_missing_or_empty_or_nothing_was_compared(tmp_path):
    _ours(tmp_path / "new", "pets", "zeroshot_classification", {"acc1": 0.8})
    gone = _compare(tmp_path / "does-not-exist", tmp_path / "new")
    assert gone.exit_code == 1 and "does-not-exist: no such folder" in gone.output and "gate: failed" in gone.output
    (tmp_path / "empty").mkdir()
    empty = _compare(tmp_path / "empty", tmp_path / "new")
    assert empty.exit_code == 1 and "BASE" in empty.output and "no results" in empty.output
    assert "nothing was compared" in empty.output
    # a base whose only result has no main metric to compare compares nothing
    _clip_benchmark(tmp_path / "captions", "mscoco_captions", "captioning", {"bleu": 0.2})
    none = _compare(tmp_path / "captions", tmp_path / "new")
    assert none.exit_code == 1 and "nothing was compared" in none.output
    # two results for one (dataset, task) in one folder: which one is the base?
    _ours(tmp_path / "new", "pets", "zeroshot_classification", {"acc1": 0.7}, model="other")
    two = _compare(tmp_path / "new", tmp_path / "new")
    assert two.exit_code == 1 and "holds 2 results" in two.output


def test_compare_and_report_read_clip_benchmark_result_files(tmp_path):
    nan = float("nan")
    _clip_benchmark(tmp_path / "base", "cifar10", "zeroshot_classification",
                    {"acc1": 0.80, "acc5": 0.95, "mean_per_class_recall": 0.79})
    _clip_benchmark(tmp_path / "base", "pets", "zeroshot_classification",  # ELEVATER: mean per-class recall
                    {"acc1": 0.60, "acc5": nan, "mean_per_class_recall": 0.70})
    _clip_benchmark(tmp_path / "base", "dtd", "linear_probe",
                    {"lp_acc1": 0.5, "lp_acc5": 0.8, "lp_mean_per_class_recall": 0.5, "weight_decay": 0.1,
                     "epochs": 10, "seed": 0, "fewshot_k": -1, "normalized": True})
    _ours(tmp_path / "new", "cifar10", "zeroshot_classification", {"acc1": 0.81, "acc5": 0.95})
    _ours(tmp_path / "new", "pets", "zeroshot_classification",
          {"acc1": 0.50, "mean_per_class_recall": 0.72, "main_metric": 0.72})
    _ours(tmp_path / "new", "dtd", "linear_probe", {"acc1": 0.49})
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--json"])
    verdict = json.loads(out.output)
    compared = {(d, m): round(delta, 6) for d, _, m, _, _, delta in verdict["rows"]}
    assert compared == {("cifar10", "acc1"): 1.0, ("pets", "main_metric"): 2.0, ("dtd", "acc1"): -1.0}
    assert out.exit_code == 1 and verdict["failures"] == ["dtd / linear_probe / acc1: dropped 1.00 pt (limit 0.5)"]
    # NEW lacks a (dataset, task) that BASE has
    (tmp_path / "new" / "m__dtd__linear_probe.json").unlink()
    lacks = _compare(tmp_path / "base", tmp_path / "new")
    assert lacks.exit_code == 1 and f"dtd / linear_probe: no result in {tmp_path / 'new'}" in lacks.output
    report = CliRunner().invoke(main, ["report", str(tmp_path / "base"), "--html", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    assert "ViT-B-32 (laion400m_e32)" in page and "cifar10 / acc1" in page and "<td class='best'>80.00</td>" in page


def test_a_truncated_result_file_is_an_error_naming_it(tmp_path):
    _ours(tmp_path / "base", "pets", "zeroshot_classification", {"acc1": 0.8})
    _ours(tmp_path / "new", "pets", "zeroshot_classification", {"acc1": 0.8})
    broken = tmp_path / "new" / "m__pets__zeroshot_classification.json"
    broken.write_text(broken.read_text()[:100])
    for args in (["compare", str(tmp_path / "base"), str(tmp_path / "new")],
                 ["report", str(tmp_path / "new"), "--html", str(tmp_path / "r.html")]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 1 and f"Error: {broken}: not valid JSON" in out.output, out.output


# --- 9. a REACT model's results are told apart from its base's -----------------------------------------------

class _ForeignLoaded:  # a plugin's own LoadedModel class (react-tune has its own copy)
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_plugin_results_are_named_apart_from_their_base(tiny_weights, monkeypatch):
    base = load(TINY, str(tiny_weights))
    plain = {"model": base.model, "preprocess": base.preprocess, "tokenizer": base.tokenizer, "name": TINY,
             "pretrained": str(tiny_weights), "lineage": [{"kind": "react.checkpoint", "id": "sha256:" + "ab" * 32,
                                                           "uri": "ckpt/manifest.json"}]}
    returns = {"old": plain,
               "new": _ForeignLoaded(**plain | {"name": f"react:cafe:{TINY}", "base_name": TINY, "kind": "react"})}

    class EntryPoint:
        def __init__(self, key):
            self.key = key

        def load(self):
            return lambda spec, device: returns[self.key]

    monkeypatch.setattr("react_eval.loaders.installed_loaders", lambda: {"old": EntryPoint("old"),
                                                                         "new": EntryPoint("new")})
    old = load("old:ckpt")  # a loader that names its model by the bare base architecture
    assert (old.name, old.base_name, old.pretrained, old.kind) == (f"old:{'ab' * 6}:{TINY}", TINY,
                                                                   str(tiny_weights), "old")
    new = load("new:ckpt")  # a loader that names it itself
    assert (new.name, new.base_name, new.kind) == (f"react:cafe:{TINY}", TINY, "new")


# --- battery: unreadable images and annotations, --workers 0, 16-bit PNG ------------------------------------

def _bomb_png() -> bytes:
    """A PNG header claiming 15,000 × 15,000 pixels (above Pillow's decompression-bomb limit), no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_or_bomb_image_is_an_error_naming_the_file(folder, tiny_weights, model_config, tmp_path, workers):
    corrupt = sorted((folder / "star").glob("*.jpg"))[1]
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated JPEG
    bomb = folder / "ring" / "bomb.png"
    bomb.write_bytes(_bomb_png())
    with pytest.raises(BadImageError, match=r"2 of 65 images cannot be read or decoded") as e:
        encode_images(load(TINY, str(tiny_weights)), load_classification(str(folder)).images, workers=workers)
    assert str(corrupt) in str(e.value) and f"{bomb}: " in str(e.value) and "decompression bomb" in str(e.value)
    out = CliRunner().invoke(main, ["run", "--model", TINY, "--pretrained", str(tiny_weights), "--model-config",
                                    model_config, "--dataset", str(folder), "--task", "zeroshot_classification",
                                    "--workers", str(workers), "--out", str(tmp_path / "out")])
    assert out.exit_code == 1 and str(bomb) in out.output and "Traceback" not in out.output
    assert not list((tmp_path / "out").glob("*.json"))


def _coco_copy(toy_root, tmp_path, edit):
    src = toy_root / "eval" / "detection"
    doc = json.loads((src / "annotations.json").read_text())
    edit(doc)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    return tmp_path / "annotations.json", src / "images"


def test_bad_coco_annotations_are_errors_naming_file_annotation_and_problem(toy_root, tiny_weights, model_config,
                                                                             tmp_path):
    def missing_image(doc):
        doc["annotations"][3]["image_id"] = 987654

    path, images = _coco_copy(toy_root, tmp_path, missing_image)
    out = CliRunner().invoke(main, ["run", "--model", TINY, "--pretrained", str(tiny_weights), "--model-config",
                                    model_config, "--dataset", str(path), "--images", str(images), "--task",
                                    "detection", "--workers", "0", "--out", str(tmp_path / "out")])
    assert out.exit_code == 1
    assert f"Error: {path}: annotation 4: image_id 987654 is not in the file's images" in out.output

    def negative_width(doc):
        doc["annotations"][0]["bbox"][2] = -5.0

    path, _ = _coco_copy(toy_root, tmp_path, negative_width)
    with pytest.raises(DatasetError, match=r"annotations.json: annotation 1 \(image 1\): bbox .* width or height <= 0"):
        load_detection(str(path))


def test_workers_0_means_no_worker_processes(toy_root, tiny_weights, model_config, tmp_path, monkeypatch):
    import react_eval.features as features

    seen = []

    class Recording(features.DataLoader):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(features, "DataLoader", Recording)
    out = CliRunner().invoke(main, ["run", "--model", TINY, "--pretrained", str(tiny_weights), "--model-config",
                                    model_config, "--dataset", str(toy_root / "eval" / "classification"), "--task",
                                    "zeroshot_classification", "--workers", "0", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert seen == [0]


def test_16_bit_png_images_are_decoded_with_their_tones(tiny_weights, tmp_path):
    grey = (np.arange(32 * 32).reshape(32, 32) * 7 % 256).astype(np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "flat.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "white.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    deep, flat, white = encode_images(load(TINY, str(tiny_weights)),
                                      [("file", str(tmp_path / n)) for n in ("deep.png", "flat.png", "white.png")],
                                      workers=0)
    assert np.allclose(deep, flat, atol=1e-5) and not np.allclose(deep, white, atol=1e-2)


# --- one error policy: a bug keeps its traceback, a user's mistake is one line -----------------------------

def test_a_bug_keeps_its_exception_and_a_user_mistake_is_one_line(toy_root, tmp_path, monkeypatch):
    _ours(tmp_path / "base", "pets", "zeroshot_classification", {"acc1": 0.8})

    def broken(*args, **kwargs):
        raise KeyError("acc1")

    monkeypatch.setattr("react_eval.gate.compare", broken)
    bug = _compare(tmp_path / "base", tmp_path / "base")
    assert isinstance(bug.exception, KeyError) and bug.exception.args == ("acc1",)
    monkeypatch.undo()
    (tmp_path / "classnames.txt").write_text("circle\nsquare\n")
    image = next((toy_root / "eval" / "classification" / "circle").glob("*.jpg"))
    (tmp_path / "test.csv").write_text(f"path,label\n{image},circle\n{image},rhombus\n")
    user = CliRunner().invoke(main, ["run", "--model", TINY, "--dataset", str(tmp_path / "test.csv"), "--task",
                                     "zeroshot_classification", "--out", str(tmp_path / "out")])
    assert user.exit_code == 1 and isinstance(user.exception, SystemExit)
    status = "react-eval: importing torch and open_clip ..."  # the progress line on stderr, before the error
    assert [line for line in user.output.strip().splitlines() if line != status] == [
        f"Error: {tmp_path / 'test.csv'}: row 2 (path '{image}'): label 'rhombus' is not a class name in "
        f"{tmp_path / 'classnames.txt'} (e.g. 'circle', 'square'); fix the label or the class list"]


def test_an_unknown_model_or_pretrained_tag_is_one_line(toy_root, tmp_path):
    captions = str(toy_root / "eval" / "retrieval" / "captions.json")
    for args, message in ((["--model", "ViT-Nope"], "--model ViT-Nope: not an open_clip model name"),
                          (["--model", "ViT-B-32", "--pretrained", "laion_typo"],
                           "--pretrained laion_typo: neither a weights file nor an open_clip tag of ViT-B-32")):
        out = CliRunner().invoke(main, ["run", *args, "--dataset", captions, "--task", "zeroshot_retrieval",
                                        "--out", str(tmp_path / "out")])
        assert out.exit_code == 1 and message in out.output, out.output
