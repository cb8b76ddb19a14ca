"""The `react-tune` command: a thin click layer over the react_tune Python API."""

import functools
import logging

import click

from . import __version__
from ._cliopts import WORKERS_DEFAULT, default_workers, positional_renamed, renamed
from ._manifests import UserError

POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)


def friendly_errors(f):
    """A user's mistake (UserError: a bad file, row, field or option; a missing or unreadable path) is one line
    naming it and exit 1; anything else is a bug and keeps its traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (UserError, FileNotFoundError, PermissionError) as e:
            raise click.ClickException(str(e)) from e
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="react-tune")
def main():
    """REACT customization: train gated blocks on a frozen open_clip model from a retrieval manifest."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command("train")
@click.argument("retrieval", required=False)
@click.option("--manifest", "old_manifest", default=None, hidden=True,
              help="Deprecated: the retrieval set is the positional RETRIEVAL.")
@click.option("--model", required=True, help="open_clip model name, e.g. ViT-B-32.")
@click.option("--pretrained", default=None, help="open_clip pretrained tag or a weights file (local or fsspec).")
@click.option("--model-config", type=click.Path(exists=True), default=None,
              help="An open_clip model config JSON (or folder) to register first.")
@click.option("--out", required=True, help="Checkpoint folder.")
@click.option("--variant", type=click.Choice(["gated-image", "locked-text", "linear-head"]), default="gated-image",
              show_default=True,
              help="gated-image: new gated blocks in the frozen image tower (REACT's main variant); locked-text: "
                   "the whole image tower trained against the frozen text tower; linear-head: REAL-Linear, a "
                   "classifier over the frozen image features, ensembled with the zero-shot one.")
@renamed("--k", "--blocks")
@click.option("--blocks", type=POSITIVE, default=None, show_default="6 for 12 layers",
              help="gated-image: gated blocks, one before each of the last N image layers.")
@click.option("--steps", type=POSITIVE, default=None, show_default="one epoch", help="Optimizer steps.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, show_default="one epoch",
              help="Run length in epochs over the retrieval set (fractions allowed); or give --steps.")
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True, help="Global batch per optimizer step.")
@click.option("--accum", type=POSITIVE, default=1, show_default=True,
              help="Micro-batches per step (gradient accumulation); the loss stays that of the whole --batch-size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              show_default="5e-4 gated-image, 5e-5 locked-text",
              help="Peak learning rate (linear warmup, then cosine decay).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="AdamW weight decay (not on biases, norms, gates or the logit scale).")
@click.option("--warmup", type=COUNT, default=None, show_default="min(5000, 10% of steps)", help="Warmup steps.")
@click.option("--augment", type=click.Choice(["open_clip", "react"]), default="open_clip", show_default=True,
              help="open_clip's training transform, or REACT's strong recipe.")
@click.option("--workers", type=COUNT, default=default_workers, show_default=WORKERS_DEFAULT,
              help="DataLoader processes reading and augmenting images, per process.")
@click.option("--read-order", type=click.Choice(["shuffled", "grouped"]), default="shuffled", show_default=True,
              help="grouped: shuffle runs of --read-group rows that are neighbours in their shard, and read each "
                   "batch's neighbours in one ranged request (for object storage).")
@click.option("--read-group", type=POSITIVE, default=32, show_default=True,
              help="Rows per run with --read-order grouped.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "amp"]), default="auto", show_default=True,
              help="auto: bf16/fp16 AMP on GPU, fp32 on CPU.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute block activations in the backward pass (less "
              "memory, more compute).")
@click.option("--no-text-cache", is_flag=True, help="Encode captions every step instead of once (slower).")
@click.option("--cache-dir", default=None, help="Where the frozen-text cache lives [OUT/text-cache].")
@click.option("--save-every", type=POSITIVE, default=500, show_default=True,
              help="Save a resumable state every N steps.")
@click.option("--log-every", type=POSITIVE, default=10, show_default=True,
              help="Append to OUT/log.jsonl every N steps.")
@click.option("--seed", default=0, show_default=True,
              help="Seeds block init, batch order and augmentation (a resumed run continues the same sequence).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present, this rank's GPU), cpu, "
              "cuda, cuda:1…")
@click.option("--resume", is_flag=True, help="Continue from OUT's latest saved state, at its exact step.")
@click.option("--max-bad-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Stop when more than this share of the rows read (from the first 1,000 on) has no usable image "
                   "(missing or undecodable); a whole batch with none stops the run below 1. 1: never stop.")
@click.option("--templates", default=None,
              help="linear-head: prompt templates, a built-in set or a file [the retrieval manifest's].")
@click.option("--held-out", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="linear-head: share of the images kept to choose the ensemble weight.")
@friendly_errors
def train_command(retrieval, old_manifest, model_config, no_text_cache, device, **options):
    """Train gated blocks (or the image tower) on the retrieval set RETRIEVAL (.parquet or its .parquet.json
    manifest); write blocks.safetensors + manifest to --out."""
    click.echo("react-tune: importing torch and open_clip ...", err=True)  # seconds of silence otherwise
    from .train import TrainConfig, train

    retrieval = positional_renamed(retrieval, old_manifest, "--manifest", "RETRIEVAL")
    if model_config:
        import open_clip

        open_clip.add_model_config(model_config)
    train(TrainConfig(retrieval=retrieval, text_cache=not no_text_cache,
                      device=None if device == "auto" else device, **options))


@main.command("export")
@click.argument("checkpoint")
@renamed("--merged", "--out")
@click.option("--out", required=True, help="Folder for model.safetensors + config.json.")
@click.option("--model-config", type=click.Path(exists=True), default=None,
              help="An open_clip model config JSON (or folder) to register first (a base model open_clip lacks).")
@friendly_errors
def export_command(checkpoint, out, model_config):
    """Write the whole customized model as one safetensors file with its config."""
    from .export import export_merged

    if model_config:
        import open_clip

        open_clip.add_model_config(model_config)
    export_merged(checkpoint, out)


if __name__ == "__main__":
    main()
