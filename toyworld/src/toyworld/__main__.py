"""python -m toyworld ROOT [--preset tiny|demo|longtail] [--seed N] [--broken KIND ...]"""

import argparse
import time

from .corpus import BROKEN_KINDS
from .generate import PRESETS, write_world


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m toyworld", description=__doc__)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--broken", nargs="*", default=[], choices=BROKEN_KINDS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    request = write_world(args.root, args.preset, args.seed, tuple(args.broken))
    print(f"toy world ({args.preset}, seed {args.seed}, {request['n_samples']} corpus samples) "
          f"in {args.root}/corpus and {args.root}/eval  [{time.perf_counter() - t0:.1f}s]")


if __name__ == "__main__":
    main()
