import json
import subprocess
import sys
import tarfile
from importlib import import_module
from importlib.metadata import entry_points

import open_clip
import pyarrow as pa
import pytest
import torch
from manifest_cases import write_retrieval_fixture
from safetensors.torch import load_file
from toy_retrieval import toy_rows

from react_tune import load_model
from react_tune.blocks import GatedBlock, ReactLayer, gate_values
from react_tune.checkpoint import read_safetensors
from react_tune.data import read_image_bytes
from react_tune.export import export_merged, load_merged
from react_tune.manifest import ManifestError
from react_tune.model import customize, load_base
from react_tune.train import TrainConfig, train
from toyworld import World, write_corpus
from toyworld.models import TINY

TRAIN_MODULE = import_module("react_tune.train")  # `react_tune.train` is the function


def _config(manifest, weights, out, **kw):
    return TrainConfig(retrieval=str(manifest), model=TINY, pretrained=str(weights), out=str(out),
                       **({"batch_size": 32, "workers": 0} | kw))


def _images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_fresh_blocks_leave_the_model_exactly_as_it_was(tiny_weights):
    base, *_ = load_base(TINY, str(tiny_weights))
    custom, *_ = load_base(TINY, str(tiny_weights))
    config = customize(custom, "gated-image", k=2)
    assert config == {"k": 2, "positions": [2, 3], "width": 64, "heads": 2, "mlp_ratio": 4.0, "act": "gelu"}
    layers = custom.visual.transformer.resblocks
    assert [type(layer).__name__ for layer in layers] == ["ResidualAttentionBlock"] * 2 + ["ReactLayer"] * 2
    assert isinstance(layers[2].gate, GatedBlock) and set(gate_values(custom).values()) == {0.0}
    with torch.no_grad():
        diff = (base.eval().encode_image(_images()) - custom.eval().encode_image(_images())).abs().max()
    assert float(diff) <= 1e-6
    trainable = {n for n, p in custom.named_parameters() if p.requires_grad}
    assert trainable == {"logit_scale"} | {n for n, _ in custom.named_parameters() if ".gate." in n}


def test_a_step_changes_only_the_trainable_parameters(tiny_weights, toy_retrieval, tmp_path):
    base, *_ = load_base(TINY, str(tiny_weights))
    before = base.state_dict()
    for variant in ("gated-image", "locked-text"):
        out = tmp_path / variant
        augment = "react" if variant == "locked-text" else "open_clip"  # both transforms run
        manifest = train(_config(toy_retrieval, tiny_weights, out, variant=variant, steps=1, lr=1e-3, warmup=0,
                                 augment=augment))
        model, *_ = load_model(str(out))
        after = {k.replace(".host.", "."): v for k, v in model.state_dict().items() if ".gate." not in k}
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        saved = load_file(str(out / "blocks.safetensors"))
        if variant == "gated-image":
            assert changed == {"logit_scale"}  # every original weight is bit-identical …
            assert set(saved) == {"logit_scale"} | {k for k in model.state_dict() if ".gate." in k}
            assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in saved.items() if "alpha" in k)
        else:
            assert changed and all(k.startswith("visual.") or k == "logit_scale" for k in changed)
            assert not any(k.startswith(("transformer.", "token_embedding", "text_projection")) for k in changed)
        assert manifest["weights"]["parameters"] == sum(v.numel() for v in saved.values())


def test_loss_decreases_within_a_few_dozen_steps(tiny_weights, toy_retrieval, tmp_path):
    train(_config(toy_retrieval, tiny_weights, tmp_path, steps=40, lr=2e-3, warmup=2, save_every=1000, log_every=1))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.1, (first, last)


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_weights, toy_retrieval, tmp_path, monkeypatch):
    train(_config(toy_retrieval, tiny_weights, tmp_path / "whole", steps=6, save_every=3))
    real = TRAIN_MODULE.save_state

    def crash_after_saving(out, step, *args, **kwargs):
        real(out, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(TRAIN_MODULE, "save_state", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(_config(toy_retrieval, tiny_weights, tmp_path / "resumed", steps=6, save_every=3))
    monkeypatch.setattr(TRAIN_MODULE, "save_state", real)
    with pytest.raises(ValueError, match="holds a saved training state; pass --resume"):
        train(_config(toy_retrieval, tiny_weights, tmp_path / "resumed", steps=6, save_every=3))
    train(_config(toy_retrieval, tiny_weights, tmp_path / "resumed", steps=6, save_every=3, resume=True))
    whole = load_file(str(tmp_path / "whole" / "blocks.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "blocks.safetensors"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_tar_member_ranged_read_returns_the_exact_jpeg_bytes(toy_root):
    shard = toy_root / "corpus" / "00002.tar"
    with tarfile.open(shard) as tar:
        member = tar.getmember("000020042.jpg")
        assert read_image_bytes(str(shard), member.offset_data, member.size) == tar.extractfile(member).read()


def test_corrupt_rows_are_counted_not_fatal_and_url_only_rows_are_refused(tiny_weights, tmp_path):
    write_corpus(tmp_path / "c", World(), 40, samples_per_shard=40, image_size=32, broken=("corrupt_jpeg",))
    rows = toy_rows([tmp_path / "c" / "00000.tar"])
    manifest = write_retrieval_fixture(tmp_path / "r", rows)
    done = train(_config(manifest, tiny_weights, tmp_path / "ck", steps=1, batch_size=41))
    assert done["training"]["skipped"] == {"missing_image": 0, "corrupt_image": 1}
    assert done["training"]["samples_seen"] == 40  # the 41 rows read, less the one skipped
    url_only = rows
    for name, typ in (("image_uri", pa.string()), ("image_offset", pa.int64()), ("image_length", pa.int64())):
        values = [*rows.column(name).to_pylist()[:-1], None]  # the last row keeps only its url
        url_only = url_only.set_column(url_only.schema.get_field_index(name), name, pa.array(values, typ))
    bad = write_retrieval_fixture(tmp_path / "u", url_only)
    with pytest.raises(ManifestError, match=r"known only by their URL.*react-index download SET\.parquet --out DIR"):
        train(_config(bad, tiny_weights, tmp_path / "ck2", steps=1))


def test_checkpoint_and_merged_export_round_trip_to_identical_embeddings(tiny_weights, toy_retrieval, tmp_path):
    manifest = train(_config(toy_retrieval, tiny_weights, tmp_path / "ck", steps=3, lr=1e-2, warmup=0))
    assert manifest["lineage"][0]["kind"] == "react.retrieval" and manifest["base_model"]["pretrained_sha256"]
    assert manifest["blocks"]["positions"] == [2, 3] and manifest["training"]["steps"] == 3
    a, _, tokenizer = load_model(str(tmp_path / "ck"))
    b, _, _ = load_model(str(tmp_path / "ck"))
    export_merged(str(tmp_path / "ck"), str(tmp_path / "merged"))
    c, _, _ = load_merged(str(tmp_path / "merged"))
    base, *_ = load_base(TINY, str(tiny_weights))
    with torch.no_grad():
        ea, eb, ec = (m.encode_image(_images()) for m in (a, b, c))
        e0 = base.eval().encode_image(_images())
        assert torch.equal(ea, eb) and torch.equal(ea, ec)
        assert float((ea - e0).abs().max()) > 1e-4  # the blocks learned something
        tokens = tokenizer(["a red star"])
        assert torch.equal(a.encode_text(tokens), base.encode_text(tokens))  # text tower untouched


def test_pickle_checkpoints_are_refused(tiny_weights, toy_retrieval, tmp_path):
    train(_config(toy_retrieval, tiny_weights, tmp_path / "ck", steps=1))
    tensors = {k: v.clone() for k, v in load_file(str(tmp_path / "ck" / "blocks.safetensors")).items()}
    (tmp_path / "ck" / "blocks.safetensors").unlink()
    torch.save(tensors, tmp_path / "ck" / "blocks.safetensors")  # a pickle under the right name
    with pytest.raises(ManifestError, match="is a pickle .* never unpickles"):
        load_model(str(tmp_path / "ck"))
    with pytest.raises(ManifestError, match="is a pickle"):
        read_safetensors(str(tmp_path / "ck" / "blocks.safetensors"))


def test_react_eval_finds_the_loader_through_its_entry_point(tiny_weights, toy_retrieval, tmp_path):
    train(_config(toy_retrieval, tiny_weights, tmp_path / "ck", steps=1))
    (ep,) = [e for e in entry_points(group="react_eval.loaders") if e.name == "react"]
    loaded = ep.load()(str(tmp_path / "ck"), "cpu")
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    short = manifest["id"].removeprefix("sha256:")[:12]
    # a name of its own (CLIP_benchmark keys results by model + pretrained: the base's would collide)
    assert loaded.name == f"react:{short}:{TINY}" and loaded.name != TINY
    assert (loaded.base_name, loaded.kind, loaded.pretrained) == (TINY, "react", str(tiny_weights))
    assert loaded.lineage == [{"kind": "react.checkpoint", "id": manifest["id"],
                               "uri": str(tmp_path / "ck" / "manifest.json")}]
    assert isinstance(loaded.model.visual.transformer.resblocks[-1], ReactLayer)


def test_torchrun_two_cpu_processes_match_one_process(tiny_weights, toy_root, model_config, tmp_path):
    # three images in four missing, tiny micro-batches: the ranks hold different numbers of readable rows (at
    # times none), some micro-batches and whole batches have nothing to train on
    rows = toy_rows([toy_root / "corpus" / "00000.tar", toy_root / "corpus" / "00001.tar"])
    uris = [str(tmp_path / "gone.tar") if i % 4 else u for i, u in enumerate(rows.column("image_uri").to_pylist())]
    rows = rows.set_column(rows.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    manifest = write_retrieval_fixture(tmp_path / "set", rows)
    args = ["train", str(manifest), "--model", TINY, "--pretrained", str(tiny_weights),
            "--model-config", model_config, "--steps", "8", "--batch-size", "8", "--accum", "2", "--workers", "0",
            "--lr", "1e-3", "--max-bad-fraction", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    subprocess.run([sys.executable, "-m", "react_tune.cli", *args, "--out", str(tmp_path / "one")], check=True,
                   capture_output=True)
    run = subprocess.run([*torchrun, "-m", "react_tune.cli", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (load_file(str(tmp_path / d / "blocks.safetensors")) for d in ("one", "two"))
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4), (k, float((one[k] - two[k]).abs().max()))
    logs = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert logs  # only rank 0 logs
    trained = [json.loads((tmp_path / d / "manifest.json").read_text())["training"] for d in ("one", "two")]
    assert trained[0]["skipped"] == trained[1]["skipped"]  # summed over the ranks
    assert trained[0]["samples_seen"] == trained[1]["samples_seen"] and trained[0]["skipped"]["missing_image"] > 0
    # a set with no readable image stops every rank alike (no rank left waiting in a collective)
    gone = pa.array([str(tmp_path / "gone.tar")] * rows.num_rows, pa.string())
    rows = rows.set_column(rows.schema.get_field_index("image_uri"), "image_uri", gone)
    args[1] = str(write_retrieval_fixture(tmp_path / "none", rows))
    args[args.index("--batch-size") + 1], args[-1] = "32", "0.5"
    run = subprocess.run([*torchrun, "-m", "react_tune.cli", *args, "--out", str(tmp_path / "three")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and run.stderr.count("no image of a whole batch of 32 rows could be read") == 2


def test_cli_answers_and_refuses_bad_manifests(tmp_path):
    from click.testing import CliRunner

    from react_tune.cli import main

    (tmp_path / "x.parquet.json").write_text('{"kind": "react.index", "version": 1}')
    out = CliRunner().invoke(main, ["train", str(tmp_path / "x.parquet"), "--model", "ViT-B-32",
                                    "--out", str(tmp_path / "o")])
    assert out.exit_code == 1 and "field 'kind' is 'react.index', expected 'react.retrieval'" in out.output
    assert open_clip.list_models()
