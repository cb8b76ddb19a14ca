"""Contrastive pretraining of a small base CLIP on the toy web corpus: the demo's "pretrained" model.

The toy world's stand-in for OpenAI's CLIP: open_clip's model, open_clip's ClipLoss, trained from a seeded
random init on every pair of the toy corpus (long-tailed, noisy alt-text). Rare shapes are rare here too, so
the resulting base is weak on them for the same reason a web-pretrained CLIP is weak on rare concepts.

    python -m toyworld.pretrain WORLD_ROOT OUT.safetensors [--steps N] [--seed S]
    python -m toyworld.pretrain WORLD_ROOT --commit     # remake the committed toyworld/weights file
    python -m toyworld.pretrain WORLD_ROOT --commit --preset longtail    # ... the longtail world's base

Deterministic for a given (world, arguments, torch build, thread count): batches come from a seeded generator,
the init from a seeded `torch.manual_seed`, and the run pins the number of intra-op threads. The weights file's
metadata records the config and a fingerprint of the weights after the first `FINGERPRINT_STEP` steps, so a
short rerun (`pretrain(..., stop_after=FINGERPRINT_STEP)`) checks that the script still makes the same model.
Needs torch + open_clip_torch (the `[models]` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

from .generate import write_world
from .models import BASE, WEIGHTS_DIR, base_weights_name, register_configs

FINGERPRINT_STEP = 50
# The committed bases' recipes where they differ from PretrainConfig's defaults (the demo base's): the longtail
# world has 8x the pairs, so fewer passes over it (about 10) at the same batch size.
PRESET_RECIPES = {"demo": {}, "longtail": {"steps": 4000}}


@dataclass(frozen=True)
class PretrainConfig:
    model: str = BASE
    steps: int = 4000
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2


def read_corpus(corpus_dir: str | Path) -> tuple[list[bytes], list[str]]:
    """(JPEG bytes, caption) for every sample of the toy corpus's tar shards, in key order."""
    images, captions = [], []
    for shard in sorted(Path(corpus_dir).glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for key in sorted({name.rsplit(".", 1)[0] for name in members}):
            if f"{key}.jpg" not in members or f"{key}.txt" not in members:
                continue
            images.append(members[f"{key}.jpg"])
            captions.append(members[f"{key}.txt"].decode("utf-8"))
    if not images:
        raise FileNotFoundError(f"no samples in {corpus_dir}/*.tar; generate the world first: python -m toyworld ROOT")
    return images, captions


def _pixels(jpegs: list[bytes], preprocess) -> torch.Tensor:
    return torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs])


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to zero: open_clip's training schedule."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def fingerprint(model: torch.nn.Module) -> dict[str, list[float]]:
    """Per-tensor sum and sum of absolute values: equal runs agree to float rounding, different runs do not."""
    return {k: [float(v.double().sum()), float(v.double().abs().sum())] for k, v in model.state_dict().items()}


def fingerprints_match(a: dict, b: dict, rtol: float = 1e-3) -> bool:
    """Equal up to float rounding after 50 steps. Tolerances scale with each tensor's sum of absolute values: a
    plain sum can cancel to near zero, where relative error is meaningless. 50 Adam steps on another CPU
    (other SIMD kernels) drift by ~1e-4 of that scale; a different seed or batch order differs by order 1."""
    return a.keys() == b.keys() and all(
        abs(a[k][0] - b[k][0]) <= rtol * b[k][1] + 1e-6 and abs(a[k][1] - b[k][1]) <= rtol * b[k][1] + 1e-6
        for k in a)


def pretrain(world_root: str | Path, out: str | Path | None, cfg: PretrainConfig = PretrainConfig(), log=print,
             stop_after: int | None = None, half: bool = False) -> dict:
    """Train `cfg.model` from a seeded init on the corpus under `world_root/corpus`; write safetensors to `out`.

    `stop_after` ends the run early (same schedule) and writes nothing: it returns the fingerprint then.
    `half` stores float16 (the committed file). Returns a summary (config, final loss, seconds, fingerprint).
    """
    register_configs()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=None)
    tokenizer = open_clip.get_tokenizer(cfg.model)
    jpegs, captions = read_corpus(Path(world_root) / "corpus")
    pixels, tokens = _pixels(jpegs, preprocess), tokenizer(captions)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.loss.ClipLoss()
    batches = torch.Generator().manual_seed(cfg.seed)
    model.train()
    t0, loss, early = time.perf_counter(), torch.tensor(float("nan")), None
    for step in range(cfg.steps):
        if step == FINGERPRINT_STEP:
            early = fingerprint(model)
        if step == stop_after:
            return {"config": asdict(cfg), "steps_run": step, "fingerprint": early or fingerprint(model)}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = torch.randperm(len(tokens), generator=batches)[: cfg.batch_size]
        flip = torch.rand(len(idx), generator=batches) < 0.5  # mirror half the batch: shapes keep their names
        images = torch.where(flip[:, None, None, None], pixels[idx].flip(-1), pixels[idx])
        image_features, text_features, logit_scale = model(images, tokens[idx])
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 200 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3f}  lr {lr_at(step, cfg):.2e}  {time.perf_counter() - t0:.0f}s")

    summary = {"config": asdict(cfg), "final_loss": round(loss.item(), 4),
               "seconds": round(time.perf_counter() - t0, 1), "samples": len(tokens),
               "fingerprint_step": FINGERPRINT_STEP, "fingerprint": early}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    dtype = torch.float16 if half else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"toyworld_pretrain": json.dumps(summary)})
    tmp.replace(out)
    return summary | {"sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def read_summary(weights: str | Path) -> dict:
    """The pretraining summary stored in a weights file's metadata."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return json.loads(f.metadata()["toyworld_pretrain"])


def still_reproduces(world_root: str | Path, weights: str | Path, **changes) -> bool:
    """Rerun the first `FINGERPRINT_STEP` steps of the run that made `weights` (its recorded config, with `changes`)
    on the world under `world_root`, and compare with the fingerprint it recorded."""
    committed = read_summary(weights)
    rerun = pretrain(world_root, None, PretrainConfig(**committed["config"] | changes), log=lambda _: None,
                     stop_after=FINGERPRINT_STEP)
    return fingerprints_match(rerun["fingerprint"], committed["fingerprint"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m toyworld.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("world_root", help="toy world root (the preset's world is generated there when missing)")
    parser.add_argument("out", nargs="?", help="weights file to write")
    parser.add_argument("--commit", action="store_true",
                        help=f"write float16 weights to {WEIGHTS_DIR}/ (the committed base of --preset)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESET_RECIPES),
                        help="the world to pretrain on, and the recipe defaults: " + json.dumps(PRESET_RECIPES))
    defaults = PretrainConfig()
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value}, or the preset's recipe")
    args = vars(parser.parse_args(argv))
    world_root, out, commit, preset = args.pop("world_root"), args.pop("out"), args.pop("commit"), args.pop("preset")
    if commit == bool(out):
        parser.error("give OUT or --commit (not both)")
    out = out or WEIGHTS_DIR / base_weights_name(preset)
    done = Path(world_root) / "toyworld-done.json"
    if done.exists() and json.loads(done.read_text())["preset"] != preset:
        parser.error(f"{world_root} holds a {json.loads(done.read_text())['preset']} world, not {preset}")
    write_world(world_root, preset)  # returns at once when it is already there
    given = {k: v for k, v in args.items() if v is not None}
    cfg = PretrainConfig(**(asdict(defaults) | PRESET_RECIPES[preset] | given))
    summary = pretrain(world_root, out, cfg, half=commit)
    print(json.dumps({k: v for k, v in summary.items() if k != "fingerprint"}, indent=1))
    print(f"zero-shot per class: react-eval run --model {cfg.model} --pretrained {out} --model-config "
          f"{Path(__file__).parent / 'model_configs' / (cfg.model + '.json')} "
          f"--dataset {world_root}/eval/classification --task zeroshot_classification --out RESULTS")


if __name__ == "__main__":
    main()
