"""The `react-eval` command: a thin click layer over the react_eval Python API."""

import functools
import json
import logging
import sys

import click

from . import __version__
from ._manifests import UserError


def friendly_errors(f):
    """A user's mistake (UserError: ManifestError, DatasetError, DomainError, …; a missing or unreadable file) is
    one line and exit 1; anything else is a bug and keeps its traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (UserError, FileNotFoundError, PermissionError) as e:
            raise click.ClickException(str(e)) from e
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-eval")
def main():
    """Evaluate CLIP models: zero-/few-shot classification, retrieval and detection; reports and a CI gate."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command("run")
@click.option("--model", required=True, help="open_clip model name, or KIND:SPEC for a registered loader "
                                             "(react:CKPT_DIR needs react-tune).")
@click.option("--pretrained", default=None, help="open_clip pretrained tag or weights file.")
@click.option("--model-config", type=click.Path(exists=True), default=None,
              help="An open_clip model config JSON (or folder) to register first.")
@click.option("--dataset", default=None, help="Dataset path or URI (with --task).")
@click.option("--task", type=click.Choice(["zeroshot_classification", "zeroshot_retrieval", "linear_probe",
                                           "detection"]), default=None)
@click.option("--suite", default=None, help="A YAML/JSON suite: {models: [...], datasets: [{dataset, task, ...}]}.")
@click.option("--templates", default=None, help="Built-in template set or file [the dataset's own, else the 80 "
                                                "OpenAI ImageNet templates].")
@click.option("--classnames", default=None, help="Class names file or built-in set, when the dataset has none.")
@click.option("--train-dataset", default=None, help="linear_probe: the train split.")
@click.option("--shots", type=int, default=None, help="linear_probe: images per class (default: all).")
@click.option("--init-from-text", is_flag=True, help="linear_probe: start the head from the zero-shot weights.")
@click.option("--proposals", default=None, help="detection: boxes to score instead of the ground truth.")
@click.option("--images", default=None, help="detection: image folder [beside the annotation json: images/].")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, help="Results folder.")
@friendly_errors
def run_command(model, pretrained, model_config, dataset, task, suite, out, device, **options):
    """Evaluate a model on a dataset and task (or a whole suite); one JSON result per (model, dataset, task)."""
    import torch

    from .run import run, run_suite

    if model_config:
        import open_clip

        open_clip.add_model_config(model_config)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    # unset options are None, or False for flags; `0 in (None, False)` is True in Python, so test identity:
    # --workers 0 means no worker processes, not the default
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    if suite:
        import fsspec
        import yaml

        from .run import check_suite

        with fsspec.open(suite, "rt") as f:
            try:
                spec = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise UserError(f"{suite}: not valid YAML/JSON ({e})") from None
        if isinstance(spec, dict) and not spec.get("models"):
            spec["models"] = [{"model": model, "pretrained": pretrained}]
        run_suite(check_suite(spec, suite), out, device, **options)
    else:
        if not (dataset and task):
            raise click.UsageError("give --dataset and --task, or --suite")
        run(model, dataset, task, out, pretrained, device, **options)


@main.command("report")
@click.argument("results", nargs=-1, required=True)
@click.option("--html", "html_out", required=True, help="Where to write the report.")
@friendly_errors
def report_command(results, html_out):
    """Tables across models × datasets and per-class charts, as one self-contained HTML page."""
    from .report import report

    report(results, html_out)


@main.command("compare")
@click.argument("base_dir")
@click.argument("new_dir")
@click.option("--max-drop", default=0.5, show_default=True, help="Fail when a main metric drops by more points.")
@click.option("--min-gain", type=float, default=None, help="Fail unless every main metric gains at least this.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@friendly_errors
def compare_command(base_dir, new_dir, max_drop, min_gain, as_json):
    """Diff NEW_DIR against BASE_DIR; exit 1 on a regression (the CI gate)."""
    from .compare import compare, format_table

    rows, failures = compare(base_dir, new_dir, max_drop, min_gain)
    if as_json:
        print(json.dumps({"rows": rows, "failures": failures}, indent=2))
    else:
        print(format_table(rows))
        for f in failures:
            print(f"FAIL {f}")
        print("gate: " + ("failed" if failures else "passed"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
