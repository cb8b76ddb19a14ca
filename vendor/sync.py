"""Copy the shared pieces in vendor/ into the packages that use them (run by `nox -s vendor`).

- manifests.py → `_manifests.py` in every package (manifest contract, user-error base, atomic writers, paths);
- imagerows.py → `_imagerows.py` in every package (image bytes from a row's locator, one decoder);
- openclip.py → `_openclip.py` in every package (open_clip by model name and weights, mistakes named);
- domainfiles.py → `_domainfiles.py` and domains.json → `domains.json` in every package
  (class, template and synonym files; built-in class names, templates, metrics; react-tune's linear-head
  reads `--templates` with them);
- loader_protocol.py → `_loader_protocol.py` in react-tune and react-eval (the model-loader plugin contract);
- cliopts.py → `_cliopts.py` in every package (CLI conventions: deprecated option spellings, default workers);
- lazyapi.py → `_lazyapi.py` in react-index and react-tune (top-level names imported on first use).

`--check` exits non-zero when a copy differs from what this script would write.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _header(source: str) -> str:
    return f"# Vendored from vendor/{source} by `nox -s vendor`. Do not edit this copy; edit the source.\n"



def _pkg(name: str) -> Path:
    return ROOT / f"packages/react-{name}/src/react_{name}"


ALL, DOMAIN_USERS, LOADER_USERS = ("index", "tune", "eval"), ("index", "tune", "eval"), ("tune", "eval")
VENDORED = [("manifests.py", ALL), ("imagerows.py", ALL), ("openclip.py", ALL), ("domainfiles.py", DOMAIN_USERS),
            ("loader_protocol.py", LOADER_USERS), ("cliopts.py", ALL), ("lazyapi.py", ("index", "tune"))]
COPIES = [(ROOT / "vendor" / src, _pkg(n) / f"_{src}", _header(src)) for src, users in VENDORED for n in users]
COPIES += [(ROOT / "vendor" / "domains.json", _pkg(n) / "domains.json", "") for n in DOMAIN_USERS]


def main(argv=sys.argv[1:]) -> int:
    stale = [(src, dst, head) for src, dst, head in COPIES
             if not dst.exists() or dst.read_text() != head + src.read_text()]
    if "--check" in argv:
        for src, dst, _ in stale:
            print(f"{dst.relative_to(ROOT)} differs from {src.relative_to(ROOT)}; run `nox -s vendor`")
        return 1 if stale else 0
    for src, dst, head in stale:
        dst.write_text(head + src.read_text())
        print(f"wrote {dst.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
