"""One vocabulary across the CLIs (docs/cli.md's introduction), react-tune's and react-eval's side: the retrieval set
is the positional RETRIEVAL (not --manifest), the gated-block count is --blocks (not --k, which means neighbours per
query), outputs are --out (not --merged / --html); every old spelling still works for one release and says so on
stderr. Every option has help text and shows its default."""

from importlib import import_module

import click
import pytest
from click.testing import CliRunner

import react_eval.reporting as reporting
from react_eval.cli import main as eval_main
from react_tune.cli import main as tune_main


def _runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """The TrainConfig `react-tune train` would run with (nothing is trained)."""
    seen = []
    monkeypatch.setattr(import_module("react_tune.train"), "train", lambda cfg: seen.append(cfg))
    return seen


def test_train_takes_the_retrieval_set_as_an_argument_and_blocks_by_name(captured):
    out = _runner().invoke(tune_main, ["train", "set.parquet", "--model", "M", "--out", "o", "--blocks", "3"],
                           prog_name="react-tune")
    assert out.exit_code == 0, out.output
    assert (captured[0].retrieval, captured[0].blocks) == ("set.parquet", 3) and "deprecated" not in out.stderr


def test_train_manifest_and_k_still_work_and_warn(captured):
    out = _runner().invoke(tune_main, ["train", "--manifest", "set.parquet", "--model", "M", "--out", "o", "--k", "3"],
                           prog_name="react-tune")
    assert out.exit_code == 0, out.output
    assert (captured[0].retrieval, captured[0].blocks) == ("set.parquet", 3)
    assert "react-tune train: --manifest is deprecated, pass RETRIEVAL as an argument" in out.stderr
    assert "react-tune train: --k is deprecated, use --blocks (the old spelling goes in 0.3)" in out.stderr


def test_train_without_a_retrieval_set_or_with_two_is_a_usage_error(captured):
    none = _runner().invoke(tune_main, ["train", "--model", "M", "--out", "o"])
    assert none.exit_code == 2 and "Missing argument 'RETRIEVAL'" in none.stderr
    two = _runner().invoke(tune_main, ["train", "a.parquet", "--manifest", "b.parquet", "--model", "M", "--out", "o"])
    assert two.exit_code == 2 and "give different values" in two.stderr
    assert not captured


def test_export_merged_and_report_html_still_work_and_warn(monkeypatch, tmp_path):
    import react_tune.export as export

    exported = []
    monkeypatch.setattr(export, "export_merged", lambda ckpt, out: exported.append((ckpt, out)))
    out = _runner().invoke(tune_main, ["export", "ck", "--merged", "m"], prog_name="react-tune")
    assert out.exit_code == 0 and exported == [("ck", "m")]
    assert "react-tune export: --merged is deprecated, use --out" in out.stderr
    reports = []
    monkeypatch.setattr(reporting, "report", lambda results, out, target_classes: reports.append(out))
    old = _runner().invoke(eval_main, ["report", "r", "--html", "r.html"], prog_name="react-eval")
    new = _runner().invoke(eval_main, ["report", "r", "--out", "r.html"], prog_name="react-eval")
    assert old.exit_code == new.exit_code == 0 and reports == ["r.html", "r.html"]
    assert "react-eval report: --html is deprecated, use --out" in old.stderr and "deprecated" not in new.stderr


@pytest.mark.parametrize("main", [tune_main, eval_main], ids=["react-tune", "react-eval"])
def test_every_option_has_help_and_shows_its_default(main):
    for name in main.list_commands(click.Context(main)):
        command = main.get_command(click.Context(main), name)
        for p in command.params:
            if not isinstance(p, click.Option) or p.hidden or p.name == "help":
                continue
            assert p.help, f"{name} {p.opts[0]} has no help text"
            if not p.is_flag and not p.required and p.default is not None:
                assert p.show_default, f"{name} {p.opts[0]} does not show its default {p.default!r}"
