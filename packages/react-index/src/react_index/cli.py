"""The `react-index` command: a thin click layer over the react_index Python API."""

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-index")
def main():
    """Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets."""


if __name__ == "__main__":
    main()
