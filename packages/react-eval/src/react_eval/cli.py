"""The `react-eval` command: a thin click layer over the react_eval Python API."""

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-eval")
def main():
    """Evaluate CLIP models: zero-/few-shot classification, retrieval and detection; reports and a CI gate."""


if __name__ == "__main__":
    main()
