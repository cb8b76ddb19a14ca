"""The README's main job on the toy world (run it with `python3 -m nox -s demo`).

Today it runs the steps that exist: generating the toy world, then `react-index build` (embed the
corpus, build and tune the indexes). The base model is still a random-init toy CLIP: the toy
pretraining, retrieval, tuning and evaluation steps join as their packages land.
A rerun reuses what exists.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from toyworld import write_world
from toyworld.models import CONFIG_DIR, TOY, save_random_init


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    out = Path(args.out)

    t0 = time.perf_counter()
    write_world(out / "world", args.preset)
    print(f"[1/2] toy world        -> {out / 'world'}  ({time.perf_counter() - t0:.1f}s)")
    summary = json.loads((out / "world" / "corpus" / "toyworld.json").read_text())
    counts, n = summary["shape_counts"], summary["n_samples"]
    print(f"web corpus: {n} image-text pairs in {len(summary['shards'])} shards; concept frequencies:")
    print(f"  {'shape':<12}{'pairs':>7}{'share':>8}")
    for shape, c in counts.items():
        print(f"  {shape:<12}{c:>7}{100 * c / n:>7.1f}%")
    print()

    t0 = time.perf_counter()
    weights = out / "models" / f"{TOY}-random.safetensors"
    if not weights.exists():
        save_random_init(TOY, weights, seed=0)
    if not (out / "index" / "manifest.json").exists():
        n_shards = len(list((out / "world" / "corpus").glob("*.tar")))
        subprocess.run([sys.executable, "-m", "react_index.cli", "build",
                        f"{out}/world/corpus/{{00000..{n_shards - 1:05d}}}.tar", "--out", str(out / "index"),
                        "--model", TOY, "--pretrained", str(weights), "--model-config", str(CONFIG_DIR / f"{TOY}.json"),
                        "--workers", "1", "--batch-size", "128"], check=True)
    print(f"[2/2] react-index build -> {out / 'index'}  ({time.perf_counter() - t0:.1f}s)")
    subprocess.run([sys.executable, "-m", "react_index.cli", "info", str(out / "index")], check=True)

    print("\nSteps not yet in the demo (their packages have not landed): toy CLIP pretraining, react-index query, "
          "react-tune train, react-eval run/report.")


if __name__ == "__main__":
    main()
