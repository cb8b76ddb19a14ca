"""P4, a training step: react-tune's gated-image variant (with and without the frozen-text cache) vs a
full fine-tune of the same model.

ViT-B-32 with seeded random weights on CPU, one fixed batch of 32 random 224 px images and
tokenised captions, AdamW, open_clip's ClipLoss on normalised features with logit_scale.exp().
Each mode runs benchmarks/p4_train_step.py in its own subprocess (so peak RSS is its own):

    full            every parameter of both towers trainable, captions encoded with gradients
    gated-cache     react_tune.model.customize(model, "gated-image"): 6 gated blocks + logit_scale
                    train; caption features computed once (react-tune's frozen-text cache)
    gated-nocache   the same, the text tower run under no_grad every step (--no-text-cache)
    accum-full      gated-cache with --accum 4: the whole batch's contrastive loss, micro-batches of 8
                    (features of all without grad first, then each recomputed with grad)
    accum-split     gated-cache split into 4 independent contrastive micro-batches of 8 (the former --accum);
                    accum_full_over_split_samples_per_s is the cost of keeping the whole batch

Warm-up steps are untimed; samples/s is timed inside the process over the timed steps. Peak RSS
is the whole subprocess's (model, optimizer state, activations). Two rounds run the modes
interleaved (this VM's speed drifts); each mode's best round counts.

REACT_BENCH_N=quick times 2 steps after 1 warm-up (or REACT_BENCH_N=<timed steps>).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchlib import bench_n, measure, revision

MODEL = "ViT-B-32"
BATCH = 32
ROUNDS = 2
MODES = ("full", "gated-cache", "gated-nocache", "accum-full", "accum-split")
ACCUM = 4


def one_mode(mode: str, steps: int, warmup: int, log: Path) -> dict:
    run = measure([sys.executable, str(Path(__file__).with_name("p4_train_step.py")), mode, "--model", MODEL,
                   "--batch-size", str(BATCH), "--warmup", str(warmup), "--steps", str(steps), "--accum", str(ACCUM)],
                  log)
    return run | json.loads(log.read_text().strip().splitlines()[-1])


def run(out_dir: Path) -> dict:
    steps = bench_n(5, quick=2)
    warmup = 2 if steps > 2 else 1
    rounds = [{mode: one_mode(mode, steps, warmup, out_dir / "logs" / f"round{r}" / f"{mode}.log") for mode in MODES}
              for r in range(ROUNDS)]
    best = {mode: max(rounds, key=lambda r, m=mode: r[m]["samples_per_s"])[mode] for mode in MODES}
    rate = {mode: best[mode]["samples_per_s"] for mode in MODES}
    rss = {mode: min(r[mode]["peak_rss_mb"] for r in rounds) for mode in MODES}
    ratios = {"gated_cache_over_full_samples_per_s": rate["gated-cache"] / rate["full"],
              "gated_nocache_over_full_samples_per_s": rate["gated-nocache"] / rate["full"],
              "gated_cache_over_full_peak_rss": rss["gated-cache"] / rss["full"],
              "gated_nocache_over_full_peak_rss": rss["gated-nocache"] / rss["full"],
              "cache_over_nocache_samples_per_s": rate["gated-cache"] / rate["gated-nocache"],
              "accum_full_over_split_samples_per_s": rate["accum-full"] / rate["accum-split"],
              "accum_full_over_gated_cache_samples_per_s": rate["accum-full"] / rate["gated-cache"],
              "accum_full_over_split_peak_rss": rss["accum-full"] / rss["accum-split"]}
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    params = {mode: {"trainable": best[mode]["trainable_params"], "frozen": best[mode]["frozen_params"]}
              for mode in ("full", "gated-cache")}
    return {"revision": revision(), "model": MODEL, "batch_size": BATCH, "image_size": 224, "timed_steps": steps,
            "warmup_steps": warmup, "torch_threads": best["full"]["torch_threads"],
            "samples_per_s": rate, "peak_rss_mb": rss, "parameters": params, "rounds": rounds, "ratios": ratios,
            "goals_met": {"gated_ge_2x_samples_per_s": ratios["gated_cache_over_full_samples_per_s"] >= 2.0,
                          "gated_le_0.6x_peak_rss": ratios["gated_cache_over_full_peak_rss"] <= 0.6,
                          "cache_ge_1.3x_samples_per_s": ratios["cache_over_nocache_samples_per_s"] >= 1.3}}
