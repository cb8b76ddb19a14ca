"""The first toy-scale REACT reproduction, 4 target shapes (`python3 -m nox -s reproduce_v1`; the second section of
docs/reproduction.md; `nox -s reproduce` is v2, scripts/reproduce.py).

One toy world and one index (the demo's), the four rarest shapes as the target domain, and these runs of
`react-tune train` (each then evaluated zero-shot with `react-eval run` on the held-out classification set):

- gated-image and locked-text on the main retrieval set (MODE, K per template per class), seeds 0, 1, 2;
- a control: the same gated-image training on as many randomly drawn corpus pairs, seeds 0, 1, 2;
- gated-image with K per template ∈ KS (seed 0), and with the other retrieval mode (t2i ↔ t2t, seed 0).

Every run trains for the same number of steps, so the runs differ only in what they are trained on.
Writes OUT/results.json, OUT/tables.md and OUT/gates.png. Reruns reuse finished runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
from chain import BASE, ChainConfig, build_index, evaluate, result_for, retrieve, split_accuracy, tune
from repro_lib import gate_curve, mean_std, plot_gates, random_control, retrieval_precision, true_shapes

from toyworld.models import base_weights

MODE, K_MAIN = "t2t", 10  # why t2t: docs/reproduction.md (the toy base's image side is weakest on rare shapes)
KS = (50, 200, 1000)
SEEDS = (0, 1, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="repro-v1-out")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="more K per template to try")
    parser.add_argument("--mode", default=MODE, choices=["t2i", "t2t"], help="the main retrieval mode")
    parser.add_argument("--k", type=int, default=K_MAIN, help="the main K per template per class")
    args = parser.parse_args()
    out, weights, t_start = Path(args.out), base_weights(), time.perf_counter()
    index = build_index(out, "demo", weights)

    mode, other = args.mode, {"t2i": "t2t", "t2t": "t2i"}[args.mode]

    def cfg(**kw) -> ChainConfig:
        return ChainConfig(out=out, steps=args.steps, **{"k": args.k, "mode": mode} | kw)

    sets = {"main": retrieve(cfg(), index, f"{mode}-k{args.k}"),
            other: retrieve(cfg(mode=other), index, f"{other}-k{args.k}")}
    for k in args.ks:
        sets[f"k{k}"] = retrieve(cfg(k=k), index, f"{mode}-k{k}")
    sets["random"] = random_control(sets["main"], index, out / "retrieval" / f"random-like-{mode}-k{args.k}.parquet")

    runs = {}  # run name -> (variant, retrieval set, seed)
    for seed in args.seeds:
        runs[f"gated-image/main/s{seed}"] = ("gated-image", "main", seed)
        runs[f"locked-text/main/s{seed}"] = ("locked-text", "main", seed)
        runs[f"gated-image/random/s{seed}"] = ("gated-image", "random", seed)
    runs[f"gated-image/{other}/s0"] = ("gated-image", other, 0)
    for k in args.ks:
        runs[f"gated-image/k{k}/s0"] = ("gated-image", f"k{k}", 0)

    models = {"base": ["--model", BASE, "--pretrained", weights]}
    checkpoints = {}
    for name, (variant, rows, seed) in runs.items():
        checkpoints[name] = tune(cfg(variant=variant, seed=seed), sets[rows], weights,
                                 f"{name.replace('/', '-')}-{mode}-k{args.k}-{args.steps}steps")
        models[name] = ["--model", f"react:{checkpoints[name]}"]
    results = evaluate(out, models)

    target = ChainConfig(out=out).target
    accuracy = {"base": split_accuracy(result_for(results, BASE), target)}
    accuracy |= {name: split_accuracy(result_for(results, f"react:{ckpt}"), target)
                 for name, ckpt in checkpoints.items()}
    truth = true_shapes(index)
    precision = {name: retrieval_precision(rows, truth) for name, rows in sets.items()}
    sizes = {name: pq.read_metadata(rows).num_rows for name, rows in sets.items()}
    gates = {name: gate_curve(ckpt) for name, ckpt in checkpoints.items() if name.startswith("gated-image/")}
    report = {"accuracy": accuracy, "retrieval_precision": precision, "retrieval_rows": sizes, "gates": gates,
              "steps": args.steps, "seeds": args.seeds, "ks": args.ks, "k_main": args.k, "mode": mode,
              "other_mode": other, "target": list(target),
              "minutes": round((time.perf_counter() - t_start) / 60, 1)}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "tables.md").write_text(tables(report))
    plot_gates(gates, out / "gates.png")
    print(tables(report))
    print(f"-> {out}/results.json, {out}/tables.md, {out}/gates.png  ({report['minutes']} min)")


def tables(r: dict) -> str:
    acc, main = r["accuracy"], f"{r['mode']}, K={r['k_main']} per template"

    def group(prefix: str) -> dict:
        return {part: [acc[n][part] for n in acc if n.startswith(prefix + "/s")] for part in ("target", "rest", "all")}

    base = acc["base"]
    lines = [f"Target classes: {', '.join(r['target'])}. Zero-shot top-1 (%) on the held-out toy classification set "
             f"(40 images per class); mean ± std over seeds {r['seeds']}; {r['steps']} steps per run.", "",
             "| model | trained on | target | rest | all |", "|---|---|---|---|---|",
             f"| base | — | {100 * base['target']:.1f} | {100 * base['rest']:.1f} | {100 * base['all']:.1f} |"]
    for label, prefix, data in (("locked-text", "locked-text/main", main), ("gated-image", "gated-image/main", main),
                                ("gated-image (control)", "gated-image/random", "random corpus pairs, same count")):
        g = group(prefix)
        if g["target"]:
            lines.append(f"| {label} | {data} | {mean_std(g['target'])} | {mean_std(g['rest'])} | "
                         f"{mean_std(g['all'])} |")
    lines += ["", "| gated-image, seed 0, trained on | rows | retrieval precision | target | rest |",
              "|---|---|---|---|---|"]
    variants = [(r["k_main"], "gated-image/main/s0", "main", r["mode"])]
    variants += [(k, f"gated-image/k{k}/s0", f"k{k}", r["mode"]) for k in r["ks"]]
    variants += [(r["k_main"], f"gated-image/{r['other_mode']}/s0", r["other_mode"], r["other_mode"])]
    for k, name, rows, mode in sorted(variants, key=lambda v: (v[3] != r["mode"], v[0])):
        if name in acc:
            lines.append(f"| {mode}, K={k} per template | {r['retrieval_rows'][rows]} | "
                         f"{100 * r['retrieval_precision'][rows]:.1f} % | {100 * acc[name]['target']:.1f} | "
                         f"{100 * acc[name]['rest']:.1f} |")
    if "gated-image/random/s0" in acc:
        lines.append(f"| random corpus pairs | {r['retrieval_rows']['random']} | "
                     f"{100 * r['retrieval_precision']['random']:.1f} % | "
                     f"{100 * acc['gated-image/random/s0']['target']:.1f} | "
                     f"{100 * acc['gated-image/random/s0']['rest']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
