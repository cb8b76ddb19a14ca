"""P5, zero-shot classification: react-eval run vs CLIP_benchmark, same dataset, weights and settings.

The dataset is toy-world's CLIP_benchmark wds layout (`toyworld.write_classification_wds`: 16
classes, 224 px JPEGs, test/nshards.txt + test/{i}.tar, classnames.txt,
zeroshot_classification_templates.txt); the model is ViT-B-32 with seeded random weights in a
local safetensors file. Both tools use the dataset's own template file, batch size 64, one
DataLoader worker, CPU, and run as subprocesses (wall time, peak RSS):

    ours             react-eval run --model ViT-B-32 --pretrained FILE --dataset DIR
                         --task zeroshot_classification --batch-size 64 --workers 1 --out OUT
    clip_benchmark   clip_benchmark eval --dataset wds/NAME --dataset_root DIR --model ViT-B-32
                         --pretrained FILE --task zeroshot_classification --batch_size 64
                         --num_workers 1 --no_amp --output result.json    (its own venv)

`--no_amp`: CLIP_benchmark's default wraps the model in torch.autocast(device) even on CPU, i.e.
bfloat16 there; react-eval runs fp32 on CPU (AMP only on GPU), so the peer runs fp32 too: the same
arithmetic, and the accuracies comparable.

The steady-state rate excludes start-up (imports, model load, weight hashing, the text classifier)
by running each tool on N images and on N/4: rate = ΔN / Δt; whole-command rates are reported too.
Two rounds run the tools interleaved; each tool's best round counts. The two tools' top-1
accuracies on the N images must agree (same weights, same arithmetic up to float rounding).

REACT_BENCH_N=quick runs 256 images (or REACT_BENCH_N=<a multiple of 64>).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchlib import bench_n, measure, peer_venv, revision, tool

MODEL = "ViT-B-32"
CLASSES = 16
BATCH = 64
WORKERS = 1
ROUNDS = 2
# clip_benchmark.datasets.imagenetv2 imports requests, not a declared dependency; its accuracy() calls float() on a
# 1-element array, an error from numpy 2.4 on
CLIP_BENCHMARK = ["clip-benchmark==1.6.2", "torch==2.14.1", "torchvision==0.29.1", "requests", "numpy<2.4"]


def prepare(folder: Path, n: int) -> tuple[Path, Path, Path]:
    """(full dataset, quarter-size dataset, weights file); kept between runs of the same size."""
    from toyworld import World, write_classification_wds
    from toyworld.models import save_random_init

    marker = folder / "ready.json"
    spec = {"n": n, "classes": CLASSES, "image_size": 224, "model": MODEL, "seed": 0}
    full, small, weights = folder / "toy", folder / "toy-small", folder / "weights.safetensors"
    if not (marker.exists() and json.loads(marker.read_text()) == spec):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"writing {n:,} + {n // 4:,} toy-world classification images and {MODEL} random-init weights",
              flush=True)
        write_classification_wds(full, World(), per_class=n // CLASSES, image_size=224)
        write_classification_wds(small, World(), per_class=n // 4 // CLASSES, image_size=224)
        save_random_init(MODEL, weights, seed=0)
        marker.write_text(json.dumps(spec))
    return full, small, weights


def ours(dataset: Path, weights: Path, out: Path, log: Path) -> dict:
    run = measure([tool("react-eval"), "run", "--model", MODEL, "--pretrained", str(weights), "--dataset",
                   str(dataset), "--task", "zeroshot_classification", "--batch-size", str(BATCH),
                   "--workers", str(WORKERS), "--out", str(out)], log,
                  before=lambda: shutil.rmtree(out, ignore_errors=True))  # a rerun would skip the result
    (result,) = out.glob("*.json")
    doc = json.loads(result.read_text())
    return run | {"images": doc["n_samples"], "acc1": doc["metrics"]["acc1"],
                  "mean_per_class_recall": doc["metrics"]["mean_per_class_recall"]}


def clip_benchmark(venv: Path, dataset: Path, weights: Path, out: Path, log: Path) -> dict:
    run = measure([str(venv / "bin" / "clip_benchmark"), "eval", "--dataset", f"wds/{dataset.name}",
                   "--dataset_root", str(dataset), "--model", MODEL, "--pretrained", str(weights),
                   "--task", "zeroshot_classification", "--batch_size", str(BATCH),
                   "--num_workers", str(WORKERS), "--no_amp", "--output", str(out)], log,
                  before=lambda: out.unlink(missing_ok=True))
    metrics = json.loads(out.read_text())["metrics"]
    return run | {"acc1": metrics["acc1"], "mean_per_class_recall": metrics.get("mean_per_class_recall")}


def steady_rate(full: dict, small: dict) -> float:
    return (full["images"] - small["images"]) / (full["wall_s"] - small["wall_s"])


def one_round(full, small, weights, venv, n: int, out_dir: Path, logs: Path) -> dict:
    runs = {"ours": ours(full, weights, out_dir / "ours", logs / "ours.log"),
            "ours_small": ours(small, weights, out_dir / "ours-small", logs / "ours-small.log"),
            "clip_benchmark": clip_benchmark(venv, full, weights, out_dir / "clip_benchmark.json",
                                             logs / "clip_benchmark.log") | {"images": n},
            "clip_benchmark_small": clip_benchmark(venv, small, weights, out_dir / "clip_benchmark-small.json",
                                                   logs / "clip_benchmark-small.log") | {"images": n // 4}}
    rates = {"ours": steady_rate(runs["ours"], runs["ours_small"]),
             "clip_benchmark": steady_rate(runs["clip_benchmark"], runs["clip_benchmark_small"])}
    whole = {"ours": n / runs["ours"]["wall_s"], "clip_benchmark": n / runs["clip_benchmark"]["wall_s"]}
    return {"images_per_s": {k: round(v, 2) for k, v in rates.items()},
            "images_per_s_whole_command": {k: round(v, 2) for k, v in whole.items()}, "runs": runs}


def run(out_dir: Path) -> dict:
    n = bench_n(1024, quick=256)
    if n % (4 * CLASSES) or n < 4 * BATCH:
        raise ValueError(f"REACT_BENCH_N={n}: use a multiple of {4 * CLASSES}, at least {4 * BATCH}")
    full, small, weights = prepare(out_dir / "data", n)
    venv = peer_venv("clip-benchmark", CLIP_BENCHMARK)
    rounds = [one_round(full, small, weights, venv, n, out_dir, out_dir / "logs" / f"round{r}")
              for r in range(ROUNDS)]
    best = {k: max(r["images_per_s"][k] for r in rounds) for k in ("ours", "clip_benchmark")}
    whole = {k: max(r["images_per_s_whole_command"][k] for r in rounds) for k in ("ours", "clip_benchmark")}
    last = rounds[-1]["runs"]
    delta = abs(last["ours"]["acc1"] - last["clip_benchmark"]["acc1"]) * 100
    ratios = {"ours_over_clip_benchmark": round(best["ours"] / best["clip_benchmark"], 3),
              "ours_over_clip_benchmark_whole_command": round(whole["ours"] / whole["clip_benchmark"], 3),
              "per_round": [round(r["images_per_s"]["ours"] / r["images_per_s"]["clip_benchmark"], 3)
                            for r in rounds]}
    return {"revision": revision(), "n": n, "startup_run_n": n // 4, "classes": CLASSES, "model": MODEL,
            "batch_size": BATCH, "workers": WORKERS, "images_per_s": best, "images_per_s_whole_command": whole,
            "acc1": {"ours": last["ours"]["acc1"], "clip_benchmark": last["clip_benchmark"]["acc1"],
                     "abs_delta_points": round(delta, 3)},
            "rounds": rounds, "ratios": ratios,
            "goals_met": {"ours_ge_1.0x_clip_benchmark": ratios["ours_over_clip_benchmark"] >= 1.0,
                          "acc1_agree_within_0.1pt": delta <= 0.1}}
