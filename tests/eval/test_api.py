"""The Python API: `from react_eval import run, run_suite, compare, report, read_results`, keyword-only beyond the
first one or two parameters, documented; compare and report import no torch; every CLI option says what it does
and its default."""

import inspect
import subprocess
import sys

import click
import pytest

import react_eval
from react_eval.cli import main

# name -> the parameters that may be given by position (the rest must be keyword-only)
POSITIONAL = {"run": ["model", "dataset"], "run_suite": ["suite"], "compare": ["base_dir", "new_dir"],
              "report": ["results_dirs"], "read_results": ["folders"]}


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_top_level_functions_are_keyword_only_beyond_the_first_and_documented(name):
    f = getattr(react_eval, name)
    assert callable(f) and f.__module__.startswith("react_eval.") and name in react_eval.__all__
    params = inspect.signature(f).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == POSITIONAL[name]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params if p.name not in positional)
    assert f.__doc__ and len(f.__doc__.split()) > 10


def test_the_functions_are_not_hidden_by_submodules_of_the_same_name():
    import react_eval.cli  # noqa: F401  (imports the modules behind run, compare and report)
    from react_eval import compare, report, run

    assert inspect.isfunction(run) and inspect.isfunction(compare) and inspect.isfunction(report)


def test_run_refuses_options_by_position():
    with pytest.raises(TypeError):
        react_eval.run("ViT-B-32", "/data/pets", "zeroshot_classification", "out")


def test_compare_and_report_import_no_torch():
    code = ("import sys\nfrom react_eval import compare, report, read_results\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nimport react_eval.cli\n"
            "assert 'torch' not in sys.modules, 'the CLI module imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        react_eval.no_such_function  # noqa: B018


def _commands(group):
    ctx = click.Context(group, info_name="react-eval")
    for name in group.list_commands(ctx):
        yield name, group.get_command(ctx, name)


def test_every_option_has_help_and_shows_its_default():
    for name, command in _commands(main):
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            where = f"react-eval {name} {param.opts[0]}"
            assert param.help, f"{where}: no help text"
            if param.is_flag or param.required:
                continue
            # a default is shown by click (show_default) or written into the help as [default: …] / [required …]
            assert param.show_default or "[default:" in param.help or "[required" in param.help, \
                f"{where}: its default is not shown"


def test_workers_default_to_the_machines_cpus_up_to_4(monkeypatch):
    from react_eval.runner import default_workers

    for cpus, want in ((1, 1), (2, 2), (16, 4), (None, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cpus=cpus: cpus)
        assert default_workers() == want
    run = dict(_commands(main))["run"]
    workers = next(p for p in run.params if p.name == "workers")
    batch = next(p for p in run.params if p.name == "batch_size")
    assert workers.default is None and "[default: min(4, CPU count)]" in workers.help and batch.default == 256
