"""Honest answers (issue 11): no silent wrong results from react-tune. Each test fails on the code before the fix."""

import hashlib
import json
import os
import shutil
from importlib import import_module

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from manifest_cases import spec_id, write_retrieval_fixture
from safetensors.torch import load_file, save_file
from toy_retrieval import toy_rows

from react_tune import load_model
from react_tune._manifests import ManifestError, UserError
from react_tune.cli import main
from react_tune.model import load_base
from react_tune.train import TrainConfig, lr_at, train
from toyworld import World, write_corpus
from toyworld.models import TINY, TOY, save_random_init

TRAIN_MODULE = import_module("react_tune.train")  # `react_tune.train` is the function


def _config(manifest, weights, out, **kw):
    return TrainConfig(retrieval=str(manifest), model=TINY, pretrained=str(weights), out=str(out),
                       **({"batch_size": 32, "workers": 0} | kw))


def _set(column: str, table: pa.Table, values: dict, typ) -> pa.Table:
    data = table.column(column).to_pylist()
    for i, v in values.items():
        data[i] = v
    return table.set_column(table.schema.get_field_index(column), column, pa.array(data, typ))


def _toy_set(toy_root, tmp_path, missing=(), name="r"):
    """The 200 toy rows of two shards, with the rows in `missing` pointing at a file that is not there."""
    rows = toy_rows([toy_root / "corpus" / "00000.tar", toy_root / "corpus" / "00001.tar"])
    rows = _set("image_uri", rows, {i: str(tmp_path / "gone" / f"{i}.tar") for i in missing}, pa.string())
    return write_retrieval_fixture(tmp_path / name, rows)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- item 3: images that are not there ---------------------------------------------------------

def test_a_set_whose_images_are_all_missing_fails_and_writes_no_checkpoint(tiny_weights, toy_root, tmp_path,
                                                                           model_config):
    manifest = _toy_set(toy_root, tmp_path, missing=range(200))
    with pytest.raises(UserError, match=r"no image of a whole batch.*0 corrupt_image.*gone/\d+\.tar.*"
                                        r"--max-bad-fraction \(now 0\.5\)") as e:
        train(_config(manifest, tiny_weights, tmp_path / "ck", steps=2))
    assert "32 of the 32 rows read" in str(e.value) and "32 missing_image" in str(e.value)
    assert not (tmp_path / "ck" / "blocks.safetensors").exists() and not (tmp_path / "ck" / "manifest.json").exists()
    # with every stop switched off, a run still ends (an epoch of empty batches) instead of looping for ever
    with pytest.raises(UserError, match="no batch had two readable images in 6 batches in a row"):
        train(_config(manifest, tiny_weights, tmp_path / "ck1", steps=2, max_bad_fraction=1.0))
    out = _cli("train", manifest, "--model", TINY, "--pretrained", tiny_weights, "--model-config",
               model_config, "--out", tmp_path / "ck2", "--steps", 2, "--batch-size", 32, "--workers", 0)
    assert out.exit_code == 1 and "missing_image" in out.output and "Traceback" not in out.output


def test_missing_and_corrupt_images_are_counted_apart_in_the_manifest_and_the_last_line(tiny_weights, tmp_path,
                                                                                        capsys):
    summary = write_corpus(tmp_path / "c", World(), 40, samples_per_shard=40, image_size=32,
                           broken=("corrupt_jpeg",))
    shard = tmp_path / "c" / "00000.tar"
    rows = toy_rows([shard])
    corrupt = rows.column("key").to_pylist().index(summary["broken"]["corrupt_jpeg"][0])
    gone, short = [i for i in range(rows.num_rows) if i != corrupt][:2], \
        [i for i in range(rows.num_rows) if i != corrupt][2]
    rows = _set("image_uri", rows, {i: str(tmp_path / "nowhere.jpg") for i in gone}, pa.string())
    rows = _set("image_offset", rows, {short: os.path.getsize(shard)}, pa.int64())  # a read past the end: short
    manifest = write_retrieval_fixture(tmp_path / "r", rows)
    done = train(_config(manifest, tiny_weights, tmp_path / "ck", steps=1, batch_size=rows.num_rows))
    training = done["training"]
    assert training["skipped"] == {"missing_image": 3, "corrupt_image": 1}
    assert training["samples_seen"] == rows.num_rows - 4
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{rows.num_rows} rows read, {rows.num_rows - 4} trained on, skipped: 3 missing_image, 1 corrupt_image" \
        in last


def test_the_unreadable_share_stops_a_run_above_max_bad_fraction(tiny_weights, toy_root, tmp_path):
    manifest = _toy_set(toy_root, tmp_path, missing=[i for i in range(200) if i % 4])  # 75 % missing
    with pytest.raises(UserError, match=r"more than --max-bad-fraction 0\.5 of the rows read could not be used: "
                                        r"\d+ of the 64 rows read"):
        train(_config(manifest, tiny_weights, tmp_path / "ck", steps=2))
    done = train(_config(manifest, tiny_weights, tmp_path / "ck2", steps=2, max_bad_fraction=0.9))
    skipped, seen = done["training"]["skipped"], done["training"]["samples_seen"]
    assert skipped["corrupt_image"] == 0 and 32 < skipped["missing_image"] < 64
    assert seen + skipped["missing_image"] == 64


def test_a_batch_without_images_is_no_step_and_resume_stays_exact(tiny_weights, toy_root, tmp_path, monkeypatch):
    manifest = _toy_set(toy_root, tmp_path, missing=[i for i in range(200) if i % 4])
    cfg = {"steps": 6, "batch_size": 4, "save_every": 3, "log_every": 1, "max_bad_fraction": 1.0, "lr": 1e-3,
           "warmup": 2}
    whole = train(_config(manifest, tiny_weights, tmp_path / "whole", **cfg))
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in log] == [lr_at(s, 6, 2, 1e-3) for s in range(6)]  # the schedule moved once a step
    empty = log[-1]["empty_batches"]
    assert empty > 0 and log[-1]["rows_read"] == 4 * (6 + empty)  # batches without an image were drawn …
    optimizer = load_file(str(tmp_path / "whole" / "state" / "00000006" / "optimizer.safetensors"))
    assert {float(v) for k, v in optimizer.items() if k.endswith(".step")} == {6.0}  # … but were no AdamW step
    assert whole["training"]["samples_seen"] + sum(whole["training"]["skipped"].values()) == 4 * (6 + empty)

    real = TRAIN_MODULE.save_state

    def crash_after_saving(out, step, *args, **kwargs):
        real(out, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(TRAIN_MODULE, "save_state", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(_config(manifest, tiny_weights, tmp_path / "resumed", **cfg))
    monkeypatch.setattr(TRAIN_MODULE, "save_state", real)
    resumed = train(_config(manifest, tiny_weights, tmp_path / "resumed", resume=True, **cfg))
    a, b = (load_file(str(tmp_path / d / "blocks.safetensors")) for d in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["training"] | {"config": None} == whole["training"] | {"config": None}


def test_a_retrieval_set_edited_after_its_sidecar_is_refused(tiny_weights, toy_root, tmp_path):
    manifest = _toy_set(toy_root, tmp_path)
    rows = toy_rows([toy_root / "corpus" / "00000.tar", toy_root / "corpus" / "00001.tar"])
    pq.write_table(_set("caption", rows, {0: "an edited caption"}, pa.string()), manifest)  # same row count
    with pytest.raises(ManifestError, match=r"set\.parquet\.json: field 'rows_sha256' does not match"):
        train(_config(manifest, tiny_weights, tmp_path / "ck", steps=1))


# --- the battery: wrong files are named, never loaded silently nor a traceback -------------------

@pytest.fixture(scope="module")
def checkpoint(tiny_weights, toy_retrieval, tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "ck"
    train(_config(toy_retrieval, tiny_weights, out, steps=2, save_every=1, lr=1e-2, warmup=0))
    return out


def _copy(checkpoint, tmp_path):
    shutil.copytree(checkpoint, tmp_path / "ck")
    return tmp_path / "ck"


def test_a_checkpoint_whose_blocks_changed_is_refused(checkpoint, tmp_path):
    ck = _copy(checkpoint, tmp_path)
    tensors = load_file(str(ck / "blocks.safetensors"))
    tensors["logit_scale"] = tensors["logit_scale"] + 1  # a valid file, other weights
    save_file(tensors, str(ck / "blocks.safetensors"))
    with pytest.raises(ManifestError, match=r"blocks\.safetensors: the file changed after .*manifest\.json was "
                                            r"written: its sha256 is not"):
        load_model(str(ck))
    out = _cli("export", ck, "--out", tmp_path / "merged")  # a user's mistake: one line, exit 1
    assert out.exit_code == 1 and "the file changed" in out.output and isinstance(out.exception, SystemExit)
    assert len(out.output.strip().splitlines()) == 1


def test_blocks_of_the_wrong_shape_are_refused_naming_the_checkpoint_and_tensor(checkpoint, tmp_path):
    ck = _copy(checkpoint, tmp_path)
    tensors = load_file(str(ck / "blocks.safetensors"))
    name = next(k for k in sorted(tensors) if k.endswith("attn.in_proj_weight"))
    tensors[name] = torch.zeros(3 * 128, 128)  # a block made for a wider base
    save_file(tensors, str(ck / "blocks.safetensors"))
    doc = json.loads((ck / "manifest.json").read_text())  # a consistent manifest: only the shapes are wrong
    doc["weights"]["sha256"] = "sha256:" + hashlib.sha256((ck / "blocks.safetensors").read_bytes()).hexdigest()
    doc["id"] = spec_id(doc)
    (ck / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=rf"ck/blocks\.safetensors \(checkpoint for {TINY}\): tensor "
                                            rf"{name} has shape \[384, 128\], but this model's has shape \[192, 64\]"):
        load_model(str(ck))


def test_a_pickle_passed_as_pretrained_is_refused_with_the_fix(tiny_weights, tmp_path, toy_retrieval, model_config):
    model, *_ = load_base(TINY, str(tiny_weights))
    torch.save(model, tmp_path / "whole-model.pt")  # a pickled module: weights_only loading refuses it
    with pytest.raises(UserError, match=r"whole-model\.pt: not a weights file .* Convert the weights to safetensors"):
        load_base(TINY, str(tmp_path / "whole-model.pt"))
    out = _cli("train", toy_retrieval, "--model", TINY, "--pretrained", tmp_path / "whole-model.pt",
               "--model-config", model_config, "--out", tmp_path / "o", "--steps", 1)
    assert out.exit_code == 1 and "whole-model.pt" in out.output and "UnpicklingError" not in out.output


def test_weights_of_another_model_are_refused_naming_file_model_and_tensor(tmp_path):
    other = save_random_init(TOY, tmp_path / "toy.safetensors")
    with pytest.raises(UserError, match=rf"toy\.safetensors: these weights do not fit {TINY}: tensor \S+ has shape "
                                        r"\[[\d, ]+\] in the file but \[[\d, ]+\] in the model"):
        load_base(TINY, str(other))


def test_a_truncated_training_state_names_the_file_and_the_fix(checkpoint, tiny_weights, toy_retrieval, tmp_path):
    ck = _copy(checkpoint, tmp_path)
    latest = ck / "state" / "latest.json"
    latest.write_bytes(latest.read_bytes()[:40])  # a disk filled up mid-write, or a copy cut short
    with pytest.raises(UserError, match=r"state/latest\.json: not a complete training state .* remove \S+/state"):
        train(_config(toy_retrieval, tiny_weights, ck, steps=3, resume=True))


@pytest.mark.parametrize("option,value", [("--save-every", 0), ("--accum", 0), ("--steps", 0), ("--batch-size", 0),
                                          ("--log-every", 0), ("--lr", -1e-3), ("--lr", 0), ("--epochs", 0),
                                          ("--max-bad-fraction", 1.5), ("--blocks", 0)])
def test_non_positive_counts_are_refused_naming_the_option(option, value, tmp_path):
    out = _cli("train", tmp_path / "set.parquet", "--model", TINY, "--out", tmp_path / "o",
               option, value)
    assert out.exit_code == 2 and f"Invalid value for '{option}'" in out.output
    field = option.removeprefix("--").replace("-", "_")
    with pytest.raises(UserError, match=f"{option} must be"):  # the Python API says the same
        train(TrainConfig(retrieval="x", model=TINY, pretrained=None, out=str(tmp_path / "o"), **{field: value}))


# --- one error policy -------------------------------------------------------------------------

def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(cfg):
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr(TRAIN_MODULE, "train", broken)
    out = _cli("train", tmp_path / "set.parquet", "--model", TINY, "--out", tmp_path / "o")
    assert isinstance(out.exception, ValueError) and str(out.exception) == "an internal invariant failed"
    assert out.exit_code == 1 and "Error: an internal invariant failed" not in out.output


def test_an_unknown_model_or_tag_is_one_line_naming_the_option(tmp_path, toy_retrieval):
    with pytest.raises(UserError, match=r"--model ViT-Q-99: not an open_clip model name.* --model-config"):
        load_base("ViT-Q-99", None)
    with pytest.raises(UserError, match=r"--pretrained laion9b: neither a weights file nor an open_clip tag of "
                                        r"ViT-B/32 .its tags: openai, laion400m_e31"):
        load_base("ViT-B/32", "laion9b")  # open_clip's old spelling of the name is a known model
    out = _cli("train", toy_retrieval, "--model", "ViT-B-32", "--pretrained", "laion9b",
               "--out", tmp_path / "o")
    assert out.exit_code == 1 and "Traceback" not in out.output and "--pretrained laion9b" in out.output
