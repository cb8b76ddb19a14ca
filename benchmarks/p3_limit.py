"""The P3 limit: the bare open_clip forward (encode_image + encode_text) on pre-decoded images and
pre-tokenised captions, with no I/O while timed. Prints one JSON line.

    python benchmarks/p3_limit.py SHARD.tar ... --model ViT-B-32 --pretrained FILE --batch-size 64
"""

import argparse
import io
import json
import tarfile
import time

import open_clip
import torch
from PIL import Image


def read_pairs(shards: list[str]) -> list[tuple[bytes, str]]:
    """(jpg bytes, caption) of every sample, in shard order."""
    pairs = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name in sorted(files):
            if name.endswith(".jpg"):
                pairs.append((files[name], files[name[:-4] + ".txt"].decode()))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.pretrained)
    model.eval()
    pairs = read_pairs(args.shards)
    images = torch.stack([preprocess(Image.open(io.BytesIO(jpg)).convert("RGB")) for jpg, _ in pairs])
    tokens = open_clip.get_tokenizer(args.model)([caption for _, caption in pairs])
    b = args.batch_size
    with torch.inference_mode():
        model.encode_image(images[:b])  # warm-up, untimed
        model.encode_text(tokens[:b])
        start = time.perf_counter()
        for lo in range(0, len(pairs), b):
            model.encode_image(images[lo:lo + b])
            model.encode_text(tokens[lo:lo + b])
        seconds = time.perf_counter() - start
    print(json.dumps({"images": len(pairs), "seconds": round(seconds, 2), "images_per_s": len(pairs) / seconds,
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
