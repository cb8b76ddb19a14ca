"""The `react-index` command: a thin click layer over the react_index Python API."""

import functools
import logging

import click

from . import __version__
from ._manifests import ManifestError
from .sources import SourceError

MODEL_OPTIONS = [
    click.option("--model", default="ViT-B-32", show_default=True, help="open_clip model name."),
    click.option("--pretrained", default=None,
                 help="open_clip pretrained tag (e.g. laion400m_e32) or a local/fsspec weights file. "
                      "For precomputed embeddings: recorded only, naming the model that made them."),
    click.option("--model-config", type=click.Path(exists=True), default=None,
                 help="An open_clip model config JSON (or folder of them) to register before loading --model."),
    click.option("--batch-size", default=256, show_default=True),
    click.option("--workers", default=4, show_default=True, help="DataLoader workers decoding input shards."),
    click.option("--device", default="auto", show_default=True, help="auto (CUDA if present), cpu, cuda, cuda:1…"),
    click.option("--skip-bad-shards", is_flag=True, help="Skip unreadable input shards (recorded in the manifest)."),
    click.option("--image-column", default="image", show_default=True, help="Parquet inputs: image column."),
    click.option("--caption-column", default="caption", show_default=True, help="Parquet inputs: caption column."),
]


def with_options(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def friendly_errors(f):
    """Bad input becomes a one-line error naming the file and what to do, not a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (SourceError, ManifestError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-index")
def main():
    """Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _embed(sources, out, model, pretrained, model_config, batch_size, workers, device, skip_bad_shards,
           image_column, caption_column):
    from .embed import embed

    if model_config:
        import open_clip

        open_clip.add_model_config(model_config)
    return embed(sources, out, model, pretrained, batch_size, workers, None if device == "auto" else device,
                 skip_bad_shards, image_column, caption_column)


@main.command("embed")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, help="Embedding store folder (local path or fsspec URI).")
@with_options(MODEL_OPTIONS)
@friendly_errors
def embed_command(sources, out, **options):
    """Embed SOURCES (tar shards, image folders, parquet, or precomputed embeddings) into a store.

    SOURCES accept fsspec URIs and brace patterns: 'shards/{00000..00099}.tar' (quote them).
    Reruns skip finished shards. Under torchrun, each rank embeds its share of the shards.
    """
    manifest = _embed(sources, out, **options)
    if manifest is not None:
        c = manifest["counts"]
        print(f"store -> {out}  ({c['samples']:,} samples, skipped: {c['skipped'] or 'none'})")


@main.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, help="Index folder (local path or fsspec URI).")
@click.option("--store", default=None, help="Where to put embeddings when SOURCES is a corpus [default: OUT/store].")
@click.option("--max-memory", default="4G", show_default=True, help="Memory budget for the index (e.g. 512M, 4G).")
@click.option("--index-key", default=None, help="A faiss index_factory string instead of the automatic choice.")
@click.option("--target-recall", default=0.95, show_default=True, help="Recall@k the search parameters are tuned to.")
@click.option("--k", "k", default=10, show_default=True, help="k of the recall@k target.")
@click.option("--shards", default=1, show_default=True, help="Build IVF in N shards merged into on-disk lists.")
@click.option("--queries", default=500, show_default=True, help="Held-out queries for tuning and measuring.")
@click.option("--modality", "modalities", multiple=True, type=click.Choice(["image", "text"]),
              help="Index only these modalities [default: every one in the store].")
@with_options(MODEL_OPTIONS)
@friendly_errors
def build_command(sources, out, store, max_memory, index_key, target_recall, k, shards, queries, modalities,
                  **options):
    """Build tuned faiss indexes from an embedding STORE, or from SOURCES (embedded first)."""
    from ._manifests import read_json
    from .build import build_index

    store_uri = sources[0] if len(sources) == 1 else None
    is_store = False
    if store_uri is not None:
        try:
            is_store = read_json(store_uri.rstrip("/") + "/manifest.json").get("kind") == "react.embedding-store"
        except ManifestError:
            is_store = False
    if not is_store:
        store_uri = store or out.rstrip("/") + "/store"
        _embed(sources, store_uri, **options)
    build_index(store_uri, out, max_memory, index_key, target_recall, k, shards, queries, 0, modalities or None)


@main.command("info")
@click.argument("path")
@friendly_errors
def info_command(path):
    """Describe a store, an index or a retrieval set (a folder, a manifest, or a .parquet)."""
    from .info import describe

    print(describe(path))


if __name__ == "__main__":
    main()
