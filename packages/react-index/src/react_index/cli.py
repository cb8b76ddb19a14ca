"""The `react-index` command: a thin click layer over the react_index Python API."""

import functools
import logging

import click

from . import __version__
from ._cliopts import WORKERS_DEFAULT, default_workers, renamed
from ._manifests import UserError

MODEL_OPTIONS = [
    click.option("--model", default=None,
                 help="open_clip model name [default: ViT-B-32 when embedding images]. For precomputed embeddings: "
                      "recorded only, naming the model that made them ('unknown' when not given)."),
    click.option("--pretrained", default=None,
                 help="open_clip pretrained tag (e.g. laion400m_e32) or a local/fsspec weights file. "
                      "For precomputed embeddings: recorded only, naming the model that made them "
                      "[default: none: random weights when embedding; 'unknown' for precomputed]."),
    click.option("--images-root", default=None,
                 help="Precomputed embeddings: the folder (or fsspec URI) holding the images their metadata's "
                      "image_path names. A path that names no file there (or, if absolute, nowhere) is not used "
                      "as a locator: the row keeps only its url [default: none]."),
    click.option("--in-place", is_flag=True,
                 help="Precomputed embeddings: make the store a manifest over the folder's own float16, unit-norm "
                      "parts (checked on a sample of every part; refused, saying why, otherwise) instead of a copy."),
    click.option("--model-config", type=click.Path(exists=True), default=None,
                 help="An open_clip model config JSON (or folder of them) to register before loading --model "
                      "[default: none, open_clip's own configs]."),
    click.option("--batch-size", default=256, show_default=True, help="Images (and captions) per forward pass."),
    click.option("--workers", default=default_workers, show_default=WORKERS_DEFAULT, type=click.IntRange(min=0),
                 help="DataLoader worker processes decoding input shards (0: in the main process)."),
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
    """A user's mistake (UserError: SourceError, DomainError, ManifestError, MissingExtraError, …; a missing or
    unreadable file) becomes a one-line error naming the file or option and the fix. Anything else is a bug and
    keeps its traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (UserError, FileNotFoundError, PermissionError) as e:
            raise click.ClickException(str(e)) from e
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-index")
def main():
    """Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _device(device: str) -> str | None:
    return None if device == "auto" else device


def _embed(sources, out, device, **options):
    from .embed import embed

    return embed(sources, out, device=_device(device), **options)


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
        _print_store(out, manifest)


def _print_store(out, manifest):
    c = manifest["counts"]
    print(f"store -> {out}  ({c['samples']:,} samples, skipped: {c['skipped'] or 'none'})")


@main.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, help="Index folder (local path or fsspec URI).")
@click.option("--store", default=None,
              help="Where to put the embeddings when SOURCES is a corpus [default: OUT/store]; unused for a STORE.")
@click.option("--max-memory", default="4G", show_default=True, help="Memory budget for the index (e.g. 512M, 4G).")
@click.option("--index-key", default=None,
              help="A faiss index_factory string instead of the automatic choice [default: chosen under "
                   "--max-memory].")
@click.option("--target-recall", default=0.95, show_default=True,
              help="Recall@k (k: --recall-at) the search parameters are tuned to.")
@renamed("--k", "--recall-at")
@click.option("--recall-at", default=10, show_default=True, type=int,
              help="The k of the recall@k target: neighbours compared with exact search.")
@click.option("--shards", default=1, show_default=True,
              help="Build IVF in N shards merged into on-disk lists; under torchrun / srun, every process fills "
                   "its share of the shards (the output folder must be shared).")
@click.option("--wait-timeout", default=21600.0, show_default=True,
              help="Parallel --shards builds: seconds a process waits without progress (for rank 0's trained "
                   "index, or for the other ranks' shards) before it gives up with an error.")
@click.option("--queries", default=500, show_default=True, help="Held-out queries for tuning and measuring.")
@click.option("--rerank", default="auto", show_default=True,
              help="Exact re-ranking of compressed indexes: 'auto' tunes r (r·k candidates re-scored with the "
                   "store's vectors) with nprobe for the best QPS at the target; 'off'; or a fixed r.")
@click.option("--modality", "modalities", multiple=True, type=click.Choice(["image", "text"]),
              help="Index only these modalities [default: every one in the store].")
@click.option("--force", is_flag=True,
              help="Rebuild even when OUT holds a finished index (by default one built from the same store with "
                   "the same options is reused, and any other is refused).")
@with_options(MODEL_OPTIONS)
@friendly_errors
def build_command(sources, out, store, max_memory, index_key, target_recall, recall_at, shards, queries, rerank,
                  modalities, wait_timeout, force, **options):
    """Build tuned faiss indexes from an embedding STORE, or from SOURCES (embedded first).

    Rerunning the same command reuses the finished index and says so; a changed store or option is refused
    (naming it) unless --force.
    """
    from .build import build_index, check_build_options, check_rerank, is_store

    check_build_options(max_memory, target_recall, recall_at, shards, queries)
    check_rerank(rerank)
    store_uri = sources[0] if len(sources) == 1 and is_store(sources[0]) else None
    if store_uri is None:
        store_uri = store or out.rstrip("/") + "/store"
        manifest = _embed(sources, store_uri, **options)
        if manifest is not None:
            _print_store(store_uri, manifest)
    build_index(store_uri, out, max_memory=max_memory, index_key=index_key, target_recall=target_recall,
                recall_at=recall_at, shards=shards, queries=queries, modalities=modalities or None, rerank=rerank,
                wait_timeout=wait_timeout, force=force)


def _param_name(option) -> str:
    return option(lambda: None).__click_params__[0].name


ADD_OPTIONS = [
    click.option("--model", default=None, help="open_clip model name [default: the store's; another is refused]."),
    click.option("--pretrained", default=None, help="Its pretrained tag or weights file [default: the store's]."),
    *(option for option in MODEL_OPTIONS if _param_name(option) not in ("model", "pretrained", "in_place")),
]


@main.command("add")
@click.argument("index_dir")
@click.argument("sources", nargs=-1, required=True)
@click.option("--target-recall", default=0.95, show_default=True,
              help="Recall@k the search parameters are tuned to again, on the grown store.")
@click.option("--max-memory", default="4G", show_default=True,
              help="On-disk (sharded) indexes: memory for the new rows' lists while they are filled.")
@with_options(ADD_OPTIONS)
@friendly_errors
def add_command(index_dir, sources, target_recall, max_memory, device, **options):
    """Add SOURCES (new tar shards, image folders, parquet, or precomputed embeddings) to the store of the index
    in INDEX_DIR and to its indexes, without retraining: new rows get the ids after the last row.

    Sources already in the store are reported and skipped; an interrupted add is finished by rerunning it.
    """
    from .add import add

    add(index_dir, sources, device=_device(device), target_recall=target_recall, max_memory=max_memory, **options)


@main.command("query")
@click.option("--index", "index_dir", required=True, help="Index folder written by `react-index build`.")
@click.option("--classes", required=True,
              help="Class names: a txt file (one per line), a json list or {class: [synonyms]}, or a built-in set "
                   "(imagenet1k, pets, …).")
@click.option("--templates", default=None,
              help="Prompt templates: a built-in set (openai_imagenet [default], simple_imagenet, pets, food101, …) "
                   "or a file (one per line, {} or {c} marks the class).")
@click.option("--mode", type=click.Choice(["t2i", "t2t", "i2i", "caption", "fusion"]), default="t2i",
              show_default=True,
              help="t2i: text prompts against the image index (REACT); t2t: against the caption index; i2i: example "
                   "images (--examples) against the image index; caption: samples whose captions name the class or a "
                   "synonym, ranked by --rank, K per class (Neural Priming / REAL); fusion: several modes (--fuse) "
                   "merged by reciprocal rank.")
@click.option("--rank", "caption_rank", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="caption mode: rank a class's caption matches by the similarity of its prompt embedding to the "
                   "sample's image (Neural Priming's filter) or caption embedding.")
@click.option("--fuse", default=None,
              help="fusion: the modes to merge, comma-separated, e.g. t2i,t2t,caption [default: t2i,t2t, and i2i "
                   "with --examples].")
@click.option("--synonyms", default=None,
              help="A synonyms file ({class: [names]} json, or 'class: name, name' lines): more names per class, "
                   "prompted and matched by caption mode [default: none].")
@click.option("--prompt-names", type=click.Choice(["as-given", "most-frequent"]), default="as-given",
              show_default=True,
              help="most-frequent: prompt each class by its most frequent name in the captions (REAL-Prompt; "
                   "needs --frequency).")
@click.option("--frequency", default=None,
              help="A concept-frequency file (react-index frequency --out) for --prompt-names most-frequent "
                   "[default: none].")
@click.option("--k", "k", default=125, show_default=True, help="Neighbours per query (per template, or per class).")
@click.option("--per", type=click.Choice(["template", "class"]), default="template", show_default=True,
              help="K per template per class (REACT) or K per class from the prompt-ensemble query.")
@click.option("--cross-class", type=click.Choice(["keep-all", "best-class"]), default="keep-all", show_default=True,
              help="A sample found for several classes: keep it in each (REACT), or only in its best class.")
@click.option("--near-duplicates", type=float, default=None,
              help="Drop samples whose cosine similarity to a better one of the same class exceeds this (e.g. 0.95) "
                   "[default: none dropped].")
@click.option("--min-score", type=float, default=None, help="Drop rows scoring below this [default: none dropped].")
@click.option("--budget", type=int, default=None,
              help="Total rows; each class keeps its top BUDGET / classes [default: no budget].")
@click.option("--rerank", default="auto", show_default=True,
              help="Exact re-ranking: 'auto' as the index was tuned (its manifest's r), 'off', or r (r·k "
                   "candidates per query re-scored with the store's vectors).")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="IVF indexes: inverted lists probed per query instead of the tuned value (probe more for queries "
                   "unlike the ones build tuned with, e.g. text queries of an image-only store) [default: as tuned].")
@click.option("--query-embeddings", default=None,
              help="Ready query vectors (.npy, (classes, d) or (classes, templates, d)): no torch needed "
                   "[default: none, prompts are encoded].")
@click.option("--examples", default=None,
              help="i2i / fusion: example images in EXAMPLES/<class name>/*.jpg [default: none].")
@click.option("--model", default=None, help="Text/image encoder [default: the index's model].")
@click.option("--pretrained", default=None, help="Its weights [default: the index's].")
@click.option("--model-config", type=click.Path(exists=True), default=None,
              help="An open_clip model config JSON (or folder of them) to register before loading the encoder "
                   "[default: none, open_clip's own configs].")
@click.option("--device", default="auto", show_default=True,
              help="Where prompts are encoded: auto (CUDA if present), cpu, cuda, cuda:1…")
@click.option("--out", required=True, help="Retrieval set .parquet (its manifest is written beside it as .json).")
@click.option("--export-urls", default=None,
              help="Also write img2dataset's input here (.parquet: url, caption, sample_id, class_name; one row per "
                   "distinct URL); `react-index attach` maps its download back to the set [default: not written].")
@friendly_errors
def query_command(index_dir, classes, templates, mode, caption_rank, fuse, synonyms, prompt_names, frequency, k, per,
                  cross_class, near_duplicates, min_score, budget, rerank, nprobe, query_embeddings, examples, model,
                  pretrained, model_config, device, out, export_urls):
    """Retrieve the most relevant samples for every class of a target domain."""
    from .domain import load_classes, load_templates
    from .query import Selection, retrieve

    selection = Selection(k=k, per=per, cross_class=cross_class, near_duplicates=near_duplicates,
                          min_score=min_score, budget=budget)
    chosen = load_templates(templates) if templates or not query_embeddings else []
    retrieve(index_dir, load_classes(classes), out=out, templates=chosen, mode=mode, selection=selection,
             query_embeddings=query_embeddings, examples=examples, model=model, pretrained=pretrained,
             device=_device(device), export_urls=export_urls, rerank=rerank, model_config=model_config,
             synonyms=synonyms, prompt_names=prompt_names, frequency=frequency, caption_rank=caption_rank,
             fuse=[m.strip() for m in fuse.split(",") if m.strip()] if fuse else None, nprobe=nprobe)


@main.command("frequency")
@click.option("--index", "index_dir", required=True, help="Index folder (or store folder) whose captions are counted.")
@click.option("--classes", required=True,
              help="Class names: a txt file, a json list or {class: [synonyms]}, or a built-in set.")
@click.option("--synonyms", default=None,
              help="A synonyms file: more names per class, each counted on its own and in the class's total "
                   "[default: none].")
@click.option("--out", default=None,
              help="Write the table: .csv or .json, one row per class (class_name, count, per-name counts, "
                   "most_frequent, tail) [default: printed only].")
@click.option("--tail-quantile", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Classes at or below this quantile of the class counts are flagged as tail classes.")
@click.option("--tail-min", type=click.IntRange(min=0), default=10, show_default=True,
              help="Classes with fewer matching captions than this are tail classes whatever the quantile.")
@friendly_errors
def frequency_command(index_dir, classes, synonyms, out, tail_quantile, tail_min):
    """Count how many captions name each class and each synonym (whole words, plurals; as --mode caption matches
    them): concept frequency in the pretraining data, REAL's signal for the tail classes CLIP fails on."""
    from .domain import load_classes, load_synonyms, with_synonyms
    from .frequency import concept_frequency, format_table, write_frequency

    targets = load_classes(classes)
    if synonyms:
        targets = with_synonyms(targets, load_synonyms(synonyms), synonyms)
    table = concept_frequency(index_dir, targets, quantile=tail_quantile, minimum=tail_min)
    click.echo(format_table(table, limit=50))
    if out:
        write_frequency(table, out)
        click.echo(f"frequency -> {out}")


@main.command("materialize")
@click.argument("retrieval")
@click.option("--out", required=True, help="Folder for the new shards and the new retrieval set.")
@click.option("--samples-per-shard", default=1000, show_default=True, help="Images per output tar shard.")
@click.option("--download", is_flag=True,
              help="Fetch URL-only rows from their URL: the same as `react-index download` with its defaults.")
@friendly_errors
def materialize_command(retrieval, out, samples_per_shard, download):
    """Copy RETRIEVAL's images into new webdataset shards, with a retrieval set pointing at them."""
    from .materialize import materialize

    materialize(retrieval, out, samples_per_shard=samples_per_shard, download=download)


@main.command("download")
@click.argument("retrieval")
@click.option("--out", required=True, help="Folder for the shards, their status files and the new retrieval set.")
@click.option("--concurrency", default=64, show_default=True,
              help="Requests in flight. 64 suits a laptop; 256-1024 a cluster node with a fast link (watch "
                   "images/s in the progress bar: raise it while the rate grows).")
@click.option("--per-host", default=8, show_default=True, help="Requests in flight to one host (politeness).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per request (connect + read).")
@click.option("--retries", default=2, show_default=True,
              help="Retries of a transient failure (5xx, 429, timeout, refused/reset, truncated), with backoff.")
@click.option("--max-bytes", default="32M", show_default=True, help="Larger images are refused (too_large).")
@click.option("--image-size", type=int, default=None,
              help="Resize to this many pixels (see --resize-mode) [default: not resized].")
@click.option("--resize-mode", type=click.Choice(["keep_ratio", "center_crop", "border", "no"]), default=None,
              help="As img2dataset: keep_ratio (shorter side = image size), center_crop (then the centre square), "
                   "border (longer side, padded white) [default: keep_ratio with --image-size, else no].")
@click.option("--encode-format", type=click.Choice(["jpg", "png", "webp"]), default="jpg", show_default=True,
              help="Format of resized (re-encoded) images; unresized JPEG/PNG/WebP/GIF are kept as they came.")
@click.option("--quality", default=95, show_default=True, help="JPEG/WebP quality of re-encoded images.")
@click.option("--samples-per-shard", default=1000, show_default=True, help="Images per output tar shard.")
@click.option("--retry-failed", is_flag=True, help="Also refetch the permanent failures (404, not an image, …).")
@click.option("--min-survival", default=0.5, show_default=True,
              help="Warn about classes that keep less than this share of their rows.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decode/resize threads (threads, not processes: they wait on the network) [default: CPU count].")
@friendly_errors
def download_command(retrieval, out, concurrency, per_host, timeout, retries, max_bytes, image_size, resize_mode,
                     encode_format, quality, samples_per_shard, retry_failed, min_survival, workers):
    """Download RETRIEVAL's URL-only rows into webdataset shards, with a trainable retrieval set pointing at them.

    Dead links never stop the run: every failure is counted per reason and per class, in the new set's manifest
    and on screen. A rerun of the same command refetches only what failed transiently. Needs the [download]
    extra: pip install 'react-index[download]'.
    """
    from .download import DownloadOptions, download, parse_bytes

    options = DownloadOptions(concurrency=concurrency, per_host=per_host, timeout=timeout, retries=retries,
                              max_bytes=parse_bytes(max_bytes), image_size=image_size,
                              resize_mode=resize_mode or ("keep_ratio" if image_size else "no"),
                              encode_format=encode_format, quality=quality, samples_per_shard=samples_per_shard,
                              retry_failed=retry_failed, min_survival=min_survival, workers=workers)
    download(retrieval, out, options=options)


@main.command("attach")
@click.argument("retrieval")
@click.argument("download_dir")
@click.option("--out", required=True, help="The new retrieval set (.parquet; its manifest is written beside it).")
@click.option("--min-survival", default=0.5, show_default=True,
              help="Warn about classes that keep less than this share of their rows.")
@click.option("--verify", is_flag=True, help="Decode every attached image (needs Pillow); corrupt ones are dropped.")
@friendly_errors
def attach_command(retrieval, download_dir, out, min_survival, verify):
    """Map img2dataset's webdataset output in DOWNLOAD_DIR back to RETRIEVAL's rows: a trainable retrieval set.

    Samples are matched by the sample_id img2dataset saved in each sample's json (export with `react-index query
    --export-urls` and pass `--save_additional_columns '["sample_id","class_name"]'`), else by URL. Failures
    per class come from img2dataset's per-shard parquet files.
    """
    from .attach import attach

    attach(retrieval, download_dir, out=out, min_survival=min_survival, verify=verify)


@main.command("inspect")
@click.argument("retrieval")
@renamed("--html", "--out")
@click.option("--out", required=True, help="Where to write the HTML report.")
@click.option("--per-class", default=12, show_default=True, help="Images shown per class.")
@click.option("--min-hits", type=int, default=None,
              help="Flag classes with fewer rows [default: a quarter of the median].")
@friendly_errors
def inspect_command(retrieval, out, per_class, min_hits):
    """Write a self-contained HTML gallery of a retrieval set."""
    from .inspect_html import inspect

    inspect(retrieval, out, per_class=per_class, min_hits=min_hits)


@main.command("adopt")
@click.option("--embeddings", required=True,
              help="The precomputed folder the index was built over (img_emb/, text_emb/, metadata/: clip-retrieval "
                   "/ LAION layout). It becomes an in-place store: nothing is copied.")
@click.option("--index", "index_file", required=True,
              help="The faiss index file (autofaiss, clip-retrieval, LAION's released kNN index), used where it is.")
@click.option("--infos", default=None,
              help="autofaiss's index_infos.json: its index_key and index_param [default: none; the key is read "
                   "from the index].")
@click.option("--out", required=True, help="Index folder to write (its manifest; the store goes in OUT/store).")
@click.option("--modality", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="Which embeddings the index holds: img_emb (autofaiss's usual input) or text_emb.")
@click.option("--store", default=None,
              help="An existing store of the folder in the order those tools read it [default: an in-place store in "
                   "OUT/store].")
@click.option("--search-params", type=click.Choice(["tune", "infos"]), default="tune", show_default=True,
              help="tune: nprobe / efSearch and exact re-ranking tuned to --target-recall, as react-index build "
                   "does (the infos' index_param is measured too); infos: keep the infos' index_param.")
@click.option("--target-recall", default=0.95, show_default=True,
              help="Recall@k (k: --recall-at) the search parameters are tuned to.")
@click.option("--rerank", default="auto", show_default=True,
              help="Exact re-ranking with the folder's vectors: 'auto' (tuned for compressed indexes), 'off', or r.")
@renamed("--k", "--recall-at")
@click.option("--recall-at", default=10, show_default=True, type=int,
              help="The k of the recall@k measured: neighbours compared with exact search.")
@click.option("--queries", default=500, show_default=True, help="Held-out queries for tuning and measuring.")
@click.option("--mmap/--no-mmap", default=True, show_default=True,
              help="Memory-map the index file (indexes larger than RAM) instead of reading it into memory.")
@click.option("--model", default=None,
              help="The open_clip model that made the embeddings (recorded; e.g. ViT-B-32) [default: unknown].")
@click.option("--pretrained", default=None,
              help="Its pretrained tag or weights file (recorded; e.g. laion400m_e32) [default: unknown].")
@click.option("--images-root", default=None,
              help="The folder holding the images the metadata's image_path names (as for embed) [default: none].")
@friendly_errors
def adopt_command(embeddings, index_file, infos, out, modality, store, search_params, target_recall, rerank,
                  recall_at, queries, mmap, model, pretrained, images_root):
    """Adopt a faiss index built by autofaiss / clip-retrieval over a precomputed folder: no rebuild, no copy.

    Ids are mapped to the folder's rows in the order those tools read it (paths sorted as text) and checked;
    recall is re-measured against exact search and recorded, as for react-index build.
    """
    from .adopt import adopt

    adopt(embeddings, index_file, out=out, infos=infos, modality=modality, store=store, model=model,
          pretrained=pretrained,
          images_root=images_root, search_params=search_params, target_recall=target_recall, rerank=rerank,
          recall_at=recall_at, queries=queries, mmap=mmap)


@main.command("info")
@click.argument("path")
@friendly_errors
def info_command(path):
    """Describe a store, an index or a retrieval set (a folder, a manifest, or a .parquet)."""
    from .info import describe

    print(describe(path))


if __name__ == "__main__":
    main()
