"""P4's measured subprocess: training steps of one mode on one fixed batch, timed inside the process.

    python benchmarks/p4_train_step.py MODE [--model ViT-B-32] [--batch-size 32] [--warmup 2] [--steps 5]

MODE is one of
    full            full fine-tune: every parameter of both towers trains; captions encoded with
                    gradients every step
    gated-cache     react_tune.model.customize(model, "gated-image"): the gated blocks (+ logit_scale)
                    train, everything else frozen; caption features computed once before the loop
    gated-nocache   the same model, the frozen text tower run under no_grad every step
    accum-full      gated-cache with --accum A: react-tune's full-batch accumulation (features of all A
                    micro-batches without grad, then each recomputed with grad against the whole batch)
    accum-split     gated-cache with the batch split into A independent contrastive micro-batches (what
                    --accum did before issue 14; the baseline for accum-full's extra forward pass)

The model is open_clip's MODEL with seeded random weights; the batch is seeded random 224 px
images and tokenised captions (the same in every mode). Loss: open_clip's ClipLoss on normalised
features with logit_scale.exp(); AdamW with react-tune's parameter groups and hyper-parameters.
`--warmup` untimed steps, then `--steps` timed ones. Prints one JSON line last: samples/s,
seconds per step, parameter counts.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import open_clip
import torch
from open_clip.loss import ClipLoss

from react_tune.model import customize, optimizer_groups, parameter_counts
from react_tune.train import full_batch_backward

MODES = ("full", "gated-cache", "gated-nocache", "accum-full", "accum-split")
CAPTION_WORDS = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "star", "striped", "dotted"]


class NoScaler:
    """GradScaler's interface without scaling (fp32 on CPU)."""

    @staticmethod
    def scale(loss):
        return loss


def batch(model_name: str, size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(size, 3, image_size, image_size, generator=generator)
    words = torch.randint(len(CAPTION_WORDS), (size, 3), generator=generator).tolist()
    captions = [f"a photo of a {CAPTION_WORDS[a]} {CAPTION_WORDS[b]} {CAPTION_WORDS[c]}" for a, b, c in words]
    return images, open_clip.get_tokenizer(model_name)(captions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--accum", type=int, default=4, help="micro-batches per step (accum-* modes)")
    args = parser.parse_args()

    if args.model.startswith("react-"):  # a toy model (smoke runs): its config comes with toyworld
        from toyworld.models import register_configs

        register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None)
    size = model.visual.image_size
    images, tokens = batch(args.model, args.batch_size, size[0] if isinstance(size, tuple) else size)
    if args.mode == "full":
        model.requires_grad_(True)
    else:
        customize(model, "gated-image")
    trainable, frozen = parameter_counts(model)
    opt = torch.optim.AdamW(optimizer_groups(model, 0.1), lr=5e-4 if args.mode != "full" else 5e-5,
                            betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()
    model.train()
    cached = None
    if args.mode in ("gated-cache", "accum-full", "accum-split"):  # the frozen-text cache: once, outside the loop
        with torch.no_grad():
            cached = model.encode_text(tokens, normalize=True)

    def accum_step() -> float:
        opt.zero_grad(set_to_none=True)
        micro = args.batch_size // args.accum
        rows = torch.arange(args.batch_size).split(micro)
        if args.mode == "accum-full":
            parts = [(images[r], r) for r in rows]
            counts = [[len(r)] for r in rows]
            loss = full_batch_backward(model, model, parts, counts, cached, 0, loss_fn, nullcontext, NoScaler(),
                                       torch.device("cpu"))
        else:
            for r in rows:
                part = loss_fn(model.encode_image(images[r], normalize=True), cached[r], model.logit_scale.exp())
                (part / args.accum).backward()
            loss = float(part.detach())
        opt.step()
        return loss

    def step() -> float:
        if args.mode.startswith("accum-"):
            return accum_step()
        opt.zero_grad(set_to_none=True)
        image_features = model.encode_image(images, normalize=True)
        if args.mode == "full":
            text_features = model.encode_text(tokens, normalize=True)
        elif args.mode in ("gated-cache", "accum-full", "accum-split"):
            text_features = cached
        else:
            with torch.no_grad():
                text_features = model.encode_text(tokens, normalize=True)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": args.mode, "batch_size": args.batch_size, "timed_steps": args.steps,
                      "accum": args.accum if args.mode.startswith("accum-") else 1,
                      "warmup_steps": args.warmup, "seconds": round(seconds, 3),
                      "seconds_per_step": round(seconds / args.steps, 3),
                      "samples_per_s": round(args.steps * args.batch_size / seconds, 3),
                      "trainable_params": trainable, "frozen_params": frozen, "final_loss": round(losses[-1], 4),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
