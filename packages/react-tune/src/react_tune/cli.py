"""The `react-tune` command: a thin click layer over the react_tune Python API."""

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-tune")
def main():
    """REACT customization: train gated blocks on a frozen open_clip model from a retrieval manifest."""


if __name__ == "__main__":
    main()
