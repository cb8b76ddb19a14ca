"""One vocabulary (docs/cli.md's introduction): renamed options keep their old spelling for one release, with a
deprecation message on stderr; every react-index option has help and shows its default; --workers defaults to
min(4, CPU count)."""

import os

import click
import pytest
from click.testing import CliRunner

from react_index import _cliopts
from react_index.cli import main

RENAMED = [("build", "--k", "--recall-at"), ("adopt", "--k", "--recall-at"), ("inspect", "--html", "--out")]


def _runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


@pytest.mark.parametrize(("command", "old", "new"), RENAMED)
def test_renamed_options_are_hidden_aliases_of_the_new_spelling(command, old, new):
    cmd = main.get_command(click.Context(main), command)
    options = {flag: p for p in cmd.params if isinstance(p, click.Option) for flag in p.opts}
    assert options[old].hidden and not options[new].hidden
    assert new in cmd.get_help(click.Context(cmd, info_name=command)) and old + " " not in cmd.get_help(
        click.Context(cmd, info_name=command))


def _build_args(tmp_path):
    from stores import make_store

    store = tmp_path / "s" / "store"
    if not store.exists():
        make_store(tmp_path / "s", 1_200, 16, 600)
    return [str(store), "--out", str(tmp_path / "idx"), "--index-key", "Flat", "--queries", "10",
            "--modality", "image"]


def test_build_k_still_works_and_warns_recall_at_does_not(tmp_path):
    from react_index.manifest import INDEX, read_manifest

    runner = _runner()
    old = runner.invoke(main, ["build", *_build_args(tmp_path), "--k", "5"], prog_name="react-index")
    assert old.exit_code == 0, old.output
    assert "react-index build: --k is deprecated, use --recall-at (the old spelling goes in 0.3)" in old.stderr
    assert read_manifest(str(tmp_path / "idx" / "manifest.json"), INDEX)["indexes"]["image"]["measured"]["k"] == 5
    new = runner.invoke(main, ["build", *_build_args(tmp_path), "--recall-at", "5"], prog_name="react-index")
    assert new.exit_code == 0 and "(reused" in new.output  # the same build: --k 5 meant --recall-at 5
    assert "deprecated" not in new.stderr
    both = runner.invoke(main, ["build", *_build_args(tmp_path), "--recall-at", "5", "--k", "6"])
    assert both.exit_code == 2 and "give different values" in both.stderr


def test_inspect_html_still_works_and_warns_out_does_not(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from react_index.manifest import write_retrieval_manifest

    rows = tmp_path / "set.parquet"
    table = pa.table({"class_name": ["a"], "class_index": pa.array([0], pa.int32()), "templates": [["t"]],
                      "rank": pa.array([0], pa.int32()), "score": pa.array([0.5], pa.float32()),
                      "sample_id": pa.array([0], pa.int64()), "key": ["k"], "caption": ["c"],
                      "image_uri": pa.array([None], pa.string()), "image_offset": pa.array([None], pa.int64()),
                      "image_length": pa.array([None], pa.int64()), "url": ["http://example.invalid/a.jpg"]})
    pq.write_table(table, rows)
    model = {"name": "m", "pretrained": "p", "pretrained_sha256": None}
    write_retrieval_manifest(str(rows), {"model": model, "mode": "t2i", "k": 1, "selection": {}, "classes": ["a"],
                                         "templates": ["t"], "counts_per_class": [1], "unique_samples": 1}, [])
    runner = _runner()
    old = runner.invoke(main, ["inspect", str(rows), "--html", str(tmp_path / "old.html")], prog_name="react-index")
    assert old.exit_code == 0, old.output
    assert "react-index inspect: --html is deprecated, use --out" in old.stderr and (tmp_path / "old.html").exists()
    new = runner.invoke(main, ["inspect", str(rows), "--out", str(tmp_path / "new.html")], prog_name="react-index")
    assert new.exit_code == 0 and "deprecated" not in new.stderr and (tmp_path / "new.html").exists()


def test_adopt_k_maps_to_recall_at(tmp_path):
    result = _runner().invoke(main, ["adopt", "--embeddings", str(tmp_path), "--index", str(tmp_path / "i"),
                                     "--out", str(tmp_path / "o"), "--k", "0"], prog_name="react-index")
    # --k 0 reached the API as recall_at=0, which is refused under its new name
    assert result.exit_code == 1 and "--recall-at must be at least 1, got 0" in result.stderr
    assert "react-index adopt: --k is deprecated, use --recall-at" in result.stderr


def test_the_helper_maps_the_old_spelling_onto_the_new_parameter():
    got = {}

    @click.command()
    @_cliopts.renamed("--k", "--recall-at")
    @click.option("--recall-at", default=10, show_default=True, type=int)
    @_cliopts.renamed("--html", "--out")
    @click.option("--out", default=None)
    @_cliopts.renamed("--fast", "--quick")
    @click.option("--quick", is_flag=True)
    def cmd(recall_at, out, quick):
        got.update(recall_at=recall_at, out=out, quick=quick)

    runner = _runner()
    result = runner.invoke(cmd, ["--k", "3", "--html", "r.html", "--fast"], prog_name="tool")
    assert result.exit_code == 0, result.output
    assert got == {"recall_at": 3, "out": "r.html", "quick": True}
    assert result.stderr.splitlines() == [
        "tool: --k is deprecated, use --recall-at (the old spelling goes in 0.3)",
        "tool: --html is deprecated, use --out (the old spelling goes in 0.3)",
        "tool: --fast is deprecated, use --quick (the old spelling goes in 0.3)"]
    result = runner.invoke(cmd, ["--recall-at", "4"], prog_name="tool")
    assert got["recall_at"] == 4 and result.stderr == ""
    assert "--k" not in runner.invoke(cmd, ["--help"]).output
    with pytest.raises(TypeError, match="declare the option --nothing"):
        _cliopts.renamed("--old", "--nothing")(cmd.callback)


def test_workers_default_to_the_machine_and_every_option_has_help_and_a_default():
    assert _cliopts.default_workers() == min(4, os.cpu_count() or 1)
    missing = []
    for name in main.list_commands(click.Context(main)):
        cmd = main.get_command(click.Context(main), name)
        ctx = click.Context(cmd, info_name=name)
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden or p.name == "help":
                continue
            if not p.help:
                missing.append(f"{name} {p.opts[0]}: no help")
            shown = p.required or p.is_flag or "default" in p.help.lower() or (
                p.show_default and p.get_default(ctx, call=False) is not None)
            if not shown:
                missing.append(f"{name} {p.opts[0]}: no default shown")
            if p.name == "workers" and name != "download":
                assert p.get_default(ctx) == _cliopts.default_workers() and p.show_default == "min(4, CPU count)"
    assert not missing, missing
