"""Regenerate vendor/domains.json, the built-in class names and prompt templates.

Sources (data, not code): open_clip's `zero_shot_metadata` (the OpenAI ImageNet-1k class names, its
80 templates and the 7 "simple" ones, from the CLIP paper's notebook) and CLIP_benchmark's
`en_zeroshot_classification_templates.json` / `en_classnames.json` (per-dataset templates and class
names, the ELEVATER datasets among them). Run in an environment with open_clip_torch, passing the
path of an unpacked clip_benchmark wheel:

    python vendor/make_domains.py /path/to/unpacked/clip_benchmark
"""

import json
import sys
from pathlib import Path

from open_clip import zero_shot_metadata as z

HERE = Path(__file__).resolve().parent

COCO80 = (  # the 80 COCO detection categories, in category-id order
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

# ELEVATER's per-dataset metric (CLIP_benchmark dataset names); accuracy everywhere else.
ELEVATER_METRICS = {"caltech101": "mean_per_class_recall", "fgvc_aircraft": "mean_per_class_recall",
                    "flowers": "mean_per_class_recall", "pets": "mean_per_class_recall",
                    "voc2007_multilabel": "mean_average_precision_11pt", "hateful_memes": "roc_auc"}


def main(clip_benchmark_dir: str) -> None:
    datasets = Path(clip_benchmark_dir) / "datasets"
    templates = json.loads((datasets / "en_zeroshot_classification_templates.json").read_text())
    classnames = json.loads((datasets / "en_classnames.json").read_text())
    domains = {
        "_source": "open_clip zero_shot_metadata; CLIP_benchmark en_zeroshot_classification_templates.json and "
                   "en_classnames.json (see vendor/make_domains.py)",
        "templates": {
            "openai_imagenet": [t("{c}") for t in z.OPENAI_IMAGENET_TEMPLATES],
            "simple_imagenet": [t("{c}") for t in z.SIMPLE_IMAGENET_TEMPLATES],
            **{name: list(ts) for name, ts in sorted(templates.items()) if name != "dummy"},
        },
        "classnames": {"imagenet1k": list(z.IMAGENET_CLASSNAMES), "coco80": list(COCO80),
                       **{name: list(cs) for name, cs in sorted(classnames.items()) if name != "imagenet1k"}},
        "metrics": ELEVATER_METRICS,
    }
    assert len(domains["classnames"]["coco80"]) == 80, len(domains["classnames"]["coco80"])
    (HERE / "domains.json").write_text(json.dumps(domains, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
