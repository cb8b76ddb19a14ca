"""The README's main job (`python3 -m nox -s demo`): REACT on the toy world, from nothing, offline.

Generates the toy world, takes the toy-pretrained base CLIP (committed; made by `python -m toyworld.pretrain`),
then runs `react-index build` → `react-index query` for a target domain of the four rarest toy shapes →
`react-tune train` (gated-image) → `react-eval run` on the base and the customized model →
`react-eval report`, and prints base vs customized accuracy on the target classes and on the rest.
A rerun reuses every output that exists.
"""

import argparse
import json
import time
from pathlib import Path

from chain import ChainConfig, interpretation, print_table, run_chain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=ChainConfig.steps, help="react-tune optimizer steps")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cfg = ChainConfig(out=Path(args.out), preset=args.preset, steps=args.steps)
    run = run_chain(cfg)

    summary = json.loads((cfg.out / "world" / "corpus" / "toyworld.json").read_text())
    counts, n = summary["shape_counts"], summary["n_samples"]
    print(f"\nweb corpus: {n} image-text pairs; the target shapes are its rarest: "
          + ", ".join(f"{s} {100 * counts[s] / n:.1f}%" for s in cfg.target))
    rows = json.loads(Path(f"{run['retrieval']}.json").read_text())
    print(f"retrieved for them: {rows['rows']} rows, {rows['unique_samples']} distinct samples "
          f"(per class: {dict(zip(rows['classes'], rows['counts_per_class'], strict=True))})")
    print_table(run["table"], cfg.target)
    trained = json.loads((Path(run["checkpoint"]) / "manifest.json").read_text())["training"]
    print("  " + interpretation(run["table"], rows["rows"], len(cfg.target), trained["samples_seen"] / rows["rows"]))
    print(f"\nreport: {run['report']}\nall outputs under {cfg.out}/  ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
