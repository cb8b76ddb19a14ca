"""The `react-eval` command: a thin click layer over the react_eval Python API."""

import functools
import json
import logging
import sys

import click

from . import __version__
from ._cliopts import renamed
from ._manifests import UserError
from .constants import DEFAULT_BATCH_SIZE, TASKS


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


TASK_HELP = ("What the dataset is evaluated for; see docs/react-eval.md [required with --dataset; a suite names "
             "its own].")


@main.command("run")
@click.option("--model", required=True, help="open_clip model name, or KIND:SPEC for a registered loader "
                                             "(react:CKPT_DIR needs react-tune).")
@click.option("--pretrained", default=None, help="open_clip pretrained tag or weights file [default: none, random "
                                                  "weights].")
@click.option("--model-config", type=click.Path(exists=True), default=None,
              help="An open_clip model config JSON (or folder) to register first [default: none].")
@click.option("--dataset", default=None, help="Dataset path or URI (with --task) [default: none; give it or --suite].")
@click.option("--task", type=click.Choice(TASKS), default=None, help=TASK_HELP)
@click.option("--suite", default=None, help="A YAML/JSON suite: {models: [...], datasets: [{dataset, task, ...}]} "
                                            "[default: none; give it or --dataset].")
@click.option("--templates", default=None, help="Built-in template set or file [default: the dataset's own, else "
                                                "the 80 OpenAI ImageNet templates; a linear-head checkpoint: its "
                                                "own].")
@click.option("--prompt-names", type=click.Choice(["as-given", "most-frequent"]), default=None,
              show_default="as-given",
              help="zeroshot_classification: most-frequent prompts each class by its most frequent name in the "
                   "pretraining captions (REAL-Prompt; needs --frequency).")
@click.option("--frequency", default=None, show_default="none",
              help="A concept-frequency file (react-index frequency --out) for --prompt-names most-frequent.")
@click.option("--classnames", default=None, help="Class names file or built-in set [default: the dataset's "
                                                 "classnames.txt].")
@click.option("--train-dataset", default=None, help="linear_probe: the train split [required for linear_probe].")
@click.option("--shots", type=click.IntRange(min=1), default=None, help="linear_probe: images per class "
                                                                        "[default: all].")
@click.option("--init-from-text", is_flag=True, help="linear_probe: start the head from the zero-shot weights "
                                                     "[default: off].")
@click.option("--proposals", default=None, help="detection: boxes to score [default: the ground-truth boxes].")
@click.option("--images", default=None, help="detection: image folder [default: images/ beside the annotation "
                                             "json].")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Images per batch.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes decoding images (0: in the main process) [default: min(4, CPU "
                   "count)].")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when available, else cpu), cpu, "
                                                                   "cuda, cuda:N.")
@click.option("--out", required=True, help="Results folder (one JSON per model × dataset × task).")
@friendly_errors
def run_command(model, pretrained, model_config, dataset, task, suite, out, device, **options):
    """Evaluate a model on a dataset and task (or a whole suite); one JSON result per (model, dataset, task)."""
    click.echo("react-eval: importing torch and open_clip ...", err=True)  # seconds of silence otherwise
    from .runner import run, run_suite

    if model_config:
        import open_clip

        open_clip.add_model_config(model_config)
    if not suite:
        if not (dataset and task):
            raise click.UsageError("give --dataset and --task, or --suite")
        run(model, dataset, task=task, out=out, pretrained=pretrained, device=device, **options)
        return
    # a suite's entries set their own options; the command line's apply where an entry is silent. Unset options
    # are None (False for flags): `0 in (None, False)` is True in Python, so test identity (--workers 0 counts)
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    run_suite(suite, out=out, model=model, pretrained=pretrained, device=device, **given)


@main.command("report")
@click.argument("results", nargs=-1, required=True)
@renamed("--html", "--out")
@click.option("--out", "html_out", required=True, help="Where to write the report (an .html file).")
@click.option("--target-classes", default=None, show_default="none",
              help="The classes a model was customized for (class file or built-in set): marked ★ in the charts, "
                   "with a target-vs-rest table per dataset.")
@friendly_errors
def report_command(results, html_out, target_classes):
    """Tables across models × datasets and per-class charts, as one self-contained HTML page."""
    from .reporting import report

    report(results, out=html_out, target_classes=target_classes)


@main.command("compare")
@click.argument("base_dir")
@click.argument("new_dir")
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Per dataset: fail when a main metric drops by more points.")
@click.option("--min-gain", type=float, default=None, help="Per dataset: fail unless every main metric gains at "
                                                           "least this many points [default: no minimum].")
@click.option("--suite-mean", is_flag=True, help="Also gate on the suite mean: per task, the mean over BASE_DIR's "
                                                 "datasets of each one's main metric (ELEVATER's average); both "
                                                 "sides must hold the same datasets [default: off].")
@click.option("--suite-max-drop", type=float, default=None,
              help="The suite mean's limit: fail when it drops by more points; giving it implies --suite-mean "
                   "[default: 0.5].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON [default: a table].")
@friendly_errors
def compare_command(base_dir, new_dir, max_drop, min_gain, suite_mean, suite_max_drop, as_json):
    """Diff NEW_DIR against BASE_DIR; exit 1 on a regression (the CI gate)."""
    from .gate import compare, format_table

    suite_mean = suite_mean or suite_max_drop is not None
    verdict = compare(base_dir, new_dir, max_drop=max_drop, min_gain=min_gain, suite_mean=suite_mean,
                      suite_max_drop=0.5 if suite_max_drop is None else suite_max_drop)
    failures = verdict["failures"]
    if as_json:
        print(json.dumps(verdict, indent=2))
    else:
        print(format_table(verdict["rows"], verdict.get("suites")))
        for f in failures:
            print(f"FAIL {f}")
        print("gate: " + ("failed" if failures else "passed"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
