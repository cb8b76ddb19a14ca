"""Reproduction v2 (`python3 -m nox -s reproduce`; the tables of docs/reproduction.md): every customization method
the toolkit has, on a world large enough to ask whether REACT forgets.

World: the toy world's `longtail` preset (64 shape × style classes, Zipf-1 long tail, 100,000 noisy pairs) and its
committed pretrained base (`python -m toyworld.pretrain ROOT --commit --preset longtail`; checked here against the
script by rerunning its first 50 steps). Target domain: the 16 rarest classes. Evaluation: zero-shot top-1 on the
held-out 64-class classification set (40 images per class), split into target and rest (the other 48 classes).

Methods (3 seeds each where training has a seed):
- base; REAL-Prompt (each class prompted by its most frequent name in the captions, `react-index frequency`);
- REAL-Linear (`react-tune train --variant linear-head`) on a class-balanced caption-retrieval set of all 64 classes
  (REAL retrieves for the task's classes, with all synonyms);
- gated-image trained on the target's t2i, t2t, caption and fusion (t2i + caption) retrieval sets;
- locked-text on the main set (t2i, REACT's default), and the control: gated-image on as many random pairs.

Every block-training run has the same steps and batch, so runs differ only in what they train on. Costs per method:
retrieved rows, training samples (steps × batch), wall time, checkpoint size. Writes OUT/results.json,
OUT/tables.md, OUT/gates.png; reruns reuse every finished step (a world, an index, a set, a checkpoint, a result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from chain import BASE, MODEL_CONFIG, build_index, evaluated_checkpoint, split_accuracy
from repro_lib import gate_curve, judged_rows, mean_std, plot_gates, random_control, true_labels

from toyworld import SHAPES, STYLES, preset_world
from toyworld.models import base_weights
from toyworld.world import STYLE_SYNONYMS, SYNONYMS

PRESET, N_TARGET, SEEDS = "longtail", 16, (0, 1, 2)
STEPS, BATCH = 400, 128  # every block-training run: 51,200 samples
K_CLASS = 200  # every target set: rows per class (t2i / t2t from the prompt-ensemble query, --per class)
K_LINEAR = 100  # REAL-Linear: caption rows per class, all 64 classes
MODES = ("t2i", "t2t", "caption", "fusion")
MAIN = "t2i"  # REACT's default mode: the set locked-text and the random control are trained on
BIN = Path(sys.executable).parent


def synonyms() -> dict[str, list[str]]:
    """Every other way a caption of the longtail world can name a class: style word × shape word."""
    out = {}
    for shape in SHAPES:
        for style in STYLES:
            names = [f"{a} {b}" for a in (style, *STYLE_SYNONYMS[style]) for b in (shape, *SYNONYMS[shape])]
            out[f"{style} {shape}"] = names[1:]  # names[0] is the class name itself
    return out


class Costs(dict):
    """Wall seconds per step, saved to `path` after every step (a rerun keeps the first run's figures)."""

    def __init__(self, path: Path):
        super().__init__(json.loads(path.read_text()) if path.exists() else {})
        self.path = path

    def run(self, key: str, done: bool, tool: str, *args) -> None:
        """Run a CLI unless its output is there; its wall time goes to self[key]."""
        if done:
            print(f"  (reused) {key}", flush=True)
            return
        t0 = time.perf_counter()
        subprocess.run([str(BIN / tool), *map(str, args)], check=True)
        self[key] = round(time.perf_counter() - t0, 1)
        self.path.write_text(json.dumps(self, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="repro-out")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--skip-base-check", action="store_true",
                        help="do not rerun the base's first 50 pretraining steps to check the committed file")
    args = parser.parse_args()
    out, t_start = Path(args.out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    weights = base_weights(PRESET)
    index = build_index(out, PRESET, weights)  # writes the world first when it is missing
    if not args.skip_base_check:
        check_base(out / "world", weights)
    costs = Costs(out / "costs.json")

    world = preset_world(PRESET)
    target = world.rare_classes(N_TARGET)
    domain = out / "domain"
    domain.mkdir(exist_ok=True)
    (domain / "target.txt").write_text("\n".join(target) + "\n")
    (domain / "all.txt").write_text("\n".join(world.classes) + "\n")
    names = synonyms()  # a synonyms file may name only the classes queried
    (domain / "synonyms-all.json").write_text(json.dumps(names, indent=1))
    (domain / "synonyms-target.json").write_text(json.dumps({c: names[c] for c in target}, indent=1))
    templates = out / "world" / "eval" / "classification" / "templates.txt"

    # concept frequency (REAL): every class of the task, all its names
    frequency = domain / "frequency.csv"
    costs.run("frequency", frequency.exists(), "react-index", "frequency", "--index", index,
              "--classes", domain / "all.txt", "--synonyms", domain / "synonyms-all.json", "--out", frequency)

    # retrieval sets
    sets = {}
    for mode in MODES:
        rows = out / "retrieval" / f"target-{mode}.parquet"
        # the same rows per class for every mode; synonyms where captions are matched (REAL, Neural Priming)
        extra = {"t2i": ["--per", "class"], "t2t": ["--per", "class"],
                 "caption": ["--synonyms", domain / "synonyms-target.json"],
                 # fusion merges each mode's K per class; --budget keeps the best-fused K per class of the union
                 "fusion": ["--fuse", "t2i,caption", "--per", "class", "--synonyms", domain / "synonyms-target.json",
                            "--budget", K_CLASS * len(target)]}[mode] + ["--k", K_CLASS]
        costs.run(f"retrieve/{mode}", rows.exists(), "react-index", "query", "--index", index,
                  "--classes", domain / "target.txt", "--templates", templates, "--mode", mode, *extra,
                  "--model-config", MODEL_CONFIG, "--out", rows)
        sets[mode] = rows
    sets["linear"] = out / "retrieval" / "all-caption.parquet"
    costs.run("retrieve/linear", sets["linear"].exists(), "react-index", "query", "--index", index,
              "--classes", domain / "all.txt", "--templates", templates, "--mode", "caption", "--k", K_LINEAR,
              "--synonyms", domain / "synonyms-all.json", "--model-config", MODEL_CONFIG, "--out", sets["linear"])
    sets["linear-text"] = out / "retrieval" / "all-caption-rank-text.parquet"  # ablation: captions ranked by text
    costs.run("retrieve/linear-text", sets["linear-text"].exists(), "react-index", "query", "--index", index,
              "--classes", domain / "all.txt", "--templates", templates, "--mode", "caption", "--rank", "text",
              "--k", K_LINEAR, "--synonyms", domain / "synonyms-all.json", "--model-config", MODEL_CONFIG,
              "--out", sets["linear-text"])
    sets["random"] = random_control(sets[MAIN], index, out / "retrieval" / f"random-like-{MAIN}.parquet")

    # training runs: name -> (variant, set, seed, more train options, steps)
    runs = {}
    for seed in args.seeds:
        for mode in MODES:
            runs[f"gated-image/{mode}/s{seed}"] = ("gated-image", mode, seed, [], args.steps)
        runs[f"locked-text/{MAIN}/s{seed}"] = ("locked-text", MAIN, seed, [], args.steps)
        runs[f"gated-image/random/s{seed}"] = ("gated-image", "random", seed, [], args.steps)
        runs[f"real-linear/caption-all/s{seed}"] = ("linear-head", "linear", seed, [], None)
    # ablations, seed 0: what limits gated-image (gate opening: lr, steps) and REAL-Linear (the ranking filter)
    runs |= {"ablation/gated-image/caption/lr2e-3/s0": ("gated-image", "caption", 0, ["--lr", "2e-3"], args.steps),
             f"ablation/gated-image/caption/{4 * args.steps}steps/s0": ("gated-image", "caption", 0, [],
                                                                         4 * args.steps),
             # the same samples in batches of 32: fewer same-class negatives per batch (8 -> 2 per target class)
             "ablation/gated-image/caption/batch32/s0": ("gated-image", "caption", 0, ["--batch-size", "32"],
                                                         4 * args.steps),
             "ablation/real-linear/caption-all-rank-text/s0": ("linear-head", "linear-text", 0, [], None)}
    checkpoints = {}
    for name, (variant, rows, seed, more, steps) in runs.items():
        ckpt = out / "checkpoints" / name.replace("/", "-")
        common = [sets[rows], "--model", BASE, "--pretrained", weights, "--model-config", MODEL_CONFIG,
                  "--out", ckpt, "--variant", variant, "--seed", seed, "--workers", "1", "--batch-size", BATCH]
        if variant != "linear-head":  # REAL-Linear trains full batch with its own step default
            common += ["--steps", steps, "--log-every", "25", "--save-every", "100", *more]
            common += ["--resume"] if ckpt.exists() and not (ckpt / "manifest.json").exists() else []
        costs.run(f"train/{name}", (ckpt / "manifest.json").exists(), "react-tune", "train", *common)
        checkpoints[name] = ckpt

    # evaluation: one results folder per model, so a model's result is never mistaken for another's
    models = {"base": ["--model", BASE, "--pretrained", weights],
              "real-prompt": ["--model", BASE, "--pretrained", weights, "--prompt-names", "most-frequent",
                              "--frequency", frequency]}
    models |= {name: ["--model", f"react:{ckpt}"] for name, ckpt in checkpoints.items()}
    results = {}
    for name, model in models.items():
        folder = out / "results" / name.replace("/", "-")
        costs.run(f"eval/{name}", has_result(folder, checkpoints.get(name)), "react-eval", "run", *model,
                  "--model-config", MODEL_CONFIG, "--dataset", out / "world" / "eval" / "classification",
                  "--task", "zeroshot_classification", "--out", folder, "--workers", "1", "--batch-size", "256")
        results[name] = read_result(folder)

    truth = true_labels(index, "class")
    report = {
        "preset": PRESET, "target": list(target), "seeds": args.seeds, "steps": args.steps, "batch_size": BATCH,
        "k_per_class": {"target sets": K_CLASS, "linear": K_LINEAR},
        "accuracy": {name: split_accuracy(doc, target) for name, doc in results.items()},
        "retrieval": {name: set_stats(rows, truth) for name, rows in sets.items()},
        "checkpoint_bytes": {name: weights_bytes(ckpt) for name, ckpt in checkpoints.items()},
        "linear_head": {name: json.loads((ckpt / "manifest.json").read_text()).get("head", {})
                        for name, ckpt in checkpoints.items() if name.startswith("real-linear")},
        "corpus_counts": json.loads((out / "world" / "corpus" / "toyworld.json").read_text())["class_counts"],
        "frequency": read_frequency(frequency),
        "costs_seconds": dict(costs),
        "gates": {name: gate_curve(ckpt) for name, ckpt in checkpoints.items() if "gated-image/" in name},
        "minutes": round((time.perf_counter() - t_start) / 60, 1),
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "tables.md").write_text(tables(report))
    plot_gates({k: v for k, v in report["gates"].items() if k.endswith("/s0")}, out / "gates.png")
    print(tables(report))
    print(f"-> {out}/results.json, {out}/tables.md, {out}/gates.png  ({report['minutes']} min this run)")


def check_base(world_root: Path, weights: Path) -> None:
    """Rerun the committed base's first 50 pretraining steps and compare fingerprints: the script, the world and
    the training stack still make the committed model (a mismatch stops the reproduction)."""
    from toyworld.pretrain import FINGERPRINT_STEP, still_reproduces

    t0 = time.perf_counter()
    print(f"checking the committed base: rerunning {FINGERPRINT_STEP} pretraining steps ...", flush=True)
    if not still_reproduces(world_root, weights):
        raise SystemExit(f"{weights} was not made by toyworld.pretrain from {world_root} with its recorded config: "
                         "remake it (python -m toyworld.pretrain ROOT --commit --preset longtail) or find the change")
    print(f"  base matches its recipe ({time.perf_counter() - t0:.0f}s)", flush=True)


def has_result(folder: Path, checkpoint: Path | None) -> bool:
    try:
        doc = read_result(folder)
    except FileNotFoundError:
        return False
    return checkpoint is None or evaluated_checkpoint(doc, checkpoint)


def read_result(folder: Path) -> dict:
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    docs = [d for d in docs if d.get("task") == "zeroshot_classification"]
    if len(docs) != 1:
        raise FileNotFoundError(f"expected one zero-shot result in {folder}, found {len(docs)}")
    return docs[0]


def set_stats(rows: Path, truth: np.ndarray) -> dict:
    names, right = judged_rows(rows, truth)
    ids = pq.read_table(rows, columns=["sample_id"]).column("sample_id").to_numpy()
    per_class = {c: int((names == c).sum()) for c in np.unique(names)}
    return {"rows": len(names), "unique_samples": len(np.unique(ids)), "precision": float(right.mean()),
            "rows_per_class": {"min": min(per_class.values()), "max": max(per_class.values())},
            "classes": len(per_class)}


def weights_bytes(ckpt: Path) -> int:
    return sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))


def read_frequency(path: Path) -> dict:
    import csv

    with open(path, newline="") as f:
        return {row["class_name"]: {"count": int(row["count"]), "most_frequent": row.get("most_frequent")}
                for row in csv.DictReader(f)}


METHODS = (  # (label, run prefix or model name, trained on)
    ("base", "base", "—"),
    ("REAL-Prompt", "real-prompt", "most frequent name per class (all 64)"),
    ("REAL-Linear", "real-linear/caption-all", "caption, all 64 classes"),
    ("locked-text", f"locked-text/{MAIN}", MAIN),
    ("gated-image", "gated-image/t2i", "t2i"),
    ("gated-image", "gated-image/t2t", "t2t"),
    ("gated-image", "gated-image/caption", "caption"),
    ("gated-image", "gated-image/fusion", "fusion (t2i + caption, best-fused 200 per class)"),
    ("gated-image (control)", "gated-image/random", f"random pairs, as many as {MAIN}"),
)


def _runs(r: dict, prefix: str) -> list[str]:
    return [n for n in r["accuracy"] if n == prefix or n.startswith(prefix + "/s")]


def tables(r: dict) -> str:
    acc, base = r["accuracy"], r["accuracy"]["base"]
    lines = [f"Target: the {len(r['target'])} rarest of 64 classes ({', '.join(r['target'])}). Zero-shot top-1 (%) "
             "on the held-out 64-class set (40 images per class); mean ± std over seeds "
             f"{r['seeds']}; Δ against base.", "",
             "| method | trained on | target | rest | all | Δ target | Δ rest |", "|---|---|---|---|---|---|---|"]
    for label, prefix, data in METHODS:
        names = _runs(r, prefix)
        if not names:
            continue
        part = {p: [acc[n][p] for n in names] for p in ("target", "rest", "all")}
        delta = {p: [acc[n][p] - base[p] for n in names] for p in ("target", "rest")}
        lines.append(f"| {label} | {data} | {mean_std(part['target'])} | {mean_std(part['rest'])} | "
                     f"{mean_std(part['all'])} | {mean_std(delta['target'])} | {mean_std(delta['rest'])} |")
    ablations = [n for n in acc if n.startswith("ablation/")]
    if ablations:
        lines += ["", "Ablations, seed 0 (beside the same method's seed-0 run; gate: mean |tanh α| at the end):", "",
                  "| run | target | rest | Δ target | Δ rest | gate |", "|---|---|---|---|---|---|"]
        for name in ["gated-image/caption/s0", *[n for n in ablations if "gated" in n], "real-linear/caption-all/s0",
                     *[n for n in ablations if "linear" in n]]:
            if name not in acc:
                continue
            a, gate = acc[name], r["gates"].get(name)
            lines.append(f"| {name.removeprefix('ablation/').removesuffix('/s0')} | {100 * a['target']:.1f} | "
                         f"{100 * a['rest']:.1f} | {100 * (a['target'] - base['target']):+.1f} | "
                         f"{100 * (a['rest'] - base['rest']):+.1f} | {f'{gate[-1][1]:.3f}' if gate else '—'} |")
    lines += ["", "Costs (per run; wall time on 2 CPU cores, mean over seeds):", "",
              "| method | retrieved rows (unique samples) | retrieval precision | retrieval s | training | train s | "
              "checkpoint |", "|---|---|---|---|---|---|---|"]
    set_of = {"real-linear/caption-all": "linear", f"locked-text/{MAIN}": MAIN, "gated-image/random": "random"}
    set_of |= {f"gated-image/{m}": m for m in MODES}
    costs = r["costs_seconds"]
    for label, prefix, _ in METHODS:
        names = _runs(r, prefix)
        if not names or prefix == "base":
            continue
        if prefix == "real-prompt":
            lines.append(f"| {label} | — (counts {len(r['frequency'])} classes' names in 100k captions) | — | "
                         f"{costs.get('frequency', '?')} | none | 0 | none |")
            continue
        s = r["retrieval"][set_of[prefix]]
        seconds = [costs[f"train/{n}"] for n in names if f"train/{n}" in costs]
        train_s = f"{np.mean(seconds):.0f}" if seconds else "?"
        mode = set_of[prefix]
        ret_s = costs.get(f"retrieve/{mode}", "—")
        if prefix.startswith("real-linear"):
            training = "300 full-batch steps over the features of each distinct image"
        else:
            training = f"{r['steps']} steps × {r['batch_size']} = {r['steps'] * r['batch_size']:,} samples"
        size = np.mean([r["checkpoint_bytes"][n] for n in names])
        lines.append(f"| {label} ({mode}) | {s['rows']:,} ({s['unique_samples']:,}) | {100 * s['precision']:.1f} % | "
                     f"{ret_s} | {training} | {train_s} | {size / 1e6:.2f} MB |")
    lines += ["", "Target classes in the corpus (pairs, captions naming the class by any name — REAL's frequency):", "",
              "| class | pairs | captions naming it | most frequent name |", "|---|---|---|---|"]
    for c in r["target"]:
        f = r["frequency"].get(c, {})
        lines.append(f"| {c} | {r['corpus_counts'][c]} | {f.get('count', '?')} | {f.get('most_frequent', '?')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
