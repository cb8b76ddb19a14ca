"""Regenerate vendor/domains.json, the built-in class names and prompt templates.

Sources (data, not code): open_clip's `zero_shot_metadata` (the OpenAI ImageNet-1k class names, its
80 templates and the 7 "simple" ones, from the CLIP paper's notebook); CLIP_benchmark's
`en_zeroshot_classification_templates.json` / `en_classnames.json` (per-dataset templates and class
names, the ELEVATER datasets among them); and OpenAI CLIP's `data/prompts.md` (kept verbatim in
vendor/sources/, see its README) for the class names CLIP_benchmark takes from torchvision at load time
(cifar10, food101, cars, …) and the Hateful Memes templates. Run in an environment with
open_clip_torch, passing the path of an unpacked clip_benchmark wheel:

    python vendor/make_domains.py /path/to/unpacked/clip_benchmark
"""

import ast
import json
import re
import sys
from pathlib import Path

from open_clip import zero_shot_metadata as z

HERE = Path(__file__).resolve().parent
OPENAI_PROMPTS = HERE / "sources" / "openai_clip_prompts.md"

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

# ELEVATER's 20 image-classification datasets, by their CLIP_benchmark names: each needs class names and templates.
ELEVATER = ("caltech101", "cars", "cifar10", "cifar100", "country211", "dtd", "eurosat", "fer2013", "fgvc_aircraft",
            "flowers", "food101", "gtsrb", "hateful_memes", "kitti_closest_vehicle_distance", "mnist", "pcam", "pets",
            "renderedsst2", "resisc45", "voc2007_multilabel")

# ELEVATER's per-dataset metric (CLIP_benchmark dataset names); accuracy everywhere else.
ELEVATER_METRICS = {"caltech101": "mean_per_class_recall", "fgvc_aircraft": "mean_per_class_recall",
                    "flowers": "mean_per_class_recall", "pets": "mean_per_class_recall",
                    "voc2007_multilabel": "mean_average_precision_11pt", "hateful_memes": "roc_auc"}

# prompts.md section → the CLIP_benchmark dataset names it supplies class names for, where CLIP_benchmark's
# en_classnames.json has none (it reads them from torchvision at load time, or lacks the dataset).
FROM_OPENAI_PROMPTS = {
    "CIFAR10": ("cifar10",), "CIFAR100": ("cifar100",), "Food101": ("food101",), "SUN397": ("sun397",),
    "StanfordCars": ("cars",), "FGVCAircraft": ("fgvc_aircraft",), "DescribableTextures": ("dtd",),
    "STL10": ("stl10",), "RESISC45": ("resisc45",), "SST2": ("renderedsst2",), "HatefulMemes": ("hateful_memes",),
    "PascalVOC2007": ("voc2007", "voc2007_multilabel"),
}


def openai_prompts(path: Path) -> dict[str, tuple[list, list[str]]]:
    """{section: (classes, templates)}: the `classes = [...]` and `templates = [...]` list literals under
    each `## Section` of OpenAI CLIP's data/prompts.md."""
    found = {}
    for section in re.split(r"^## ", path.read_text(), flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        lists = dict(re.findall(r"^(classes|templates) = (\[.*?^\])", body, flags=re.M | re.S))
        found[heading.strip()] = (ast.literal_eval(lists["classes"]), ast.literal_eval(lists["templates"]))
    return found


def voc_label_order(clip_benchmark_dir: Path) -> list[str]:
    """The VOC2007 class names in CLIP_benchmark's label order (`object_categories` in datasets/voc2007.py)."""
    tree = ast.parse((clip_benchmark_dir / "datasets" / "voc2007.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "object_categories" for t in node.targets))


def prompts_md_additions(clip_benchmark_dir: Path, classnames: dict, templates: dict) -> tuple[dict, dict]:
    """Class names (and templates) from prompts.md for the datasets CLIP_benchmark ships none for."""
    prompts = openai_prompts(OPENAI_PROMPTS)
    new_classes, new_templates = {}, {}
    for section, names in FROM_OPENAI_PROMPTS.items():
        classes, section_templates = prompts[section]
        for name in names:
            if name not in classnames:
                new_classes[name] = list(classes)
            if name not in templates:
                new_templates[name] = [t.replace("{}", "{c}") for t in section_templates]
    # prompts.md lists VOC's classes in another order than the dataset's labels: use the labels' order.
    voc = voc_label_order(clip_benchmark_dir)
    for name in ("voc2007", "voc2007_multilabel"):
        if name in new_classes:
            assert sorted(new_classes[name]) == sorted(voc), (new_classes[name], voc)
            new_classes[name] = voc
    return new_classes, new_templates


def main(clip_benchmark_dir: str) -> None:
    datasets = Path(clip_benchmark_dir) / "datasets"
    templates = json.loads((datasets / "en_zeroshot_classification_templates.json").read_text())
    classnames = json.loads((datasets / "en_classnames.json").read_text())
    new_classes, new_templates = prompts_md_additions(Path(clip_benchmark_dir), classnames, templates)
    templates, classnames = {**templates, **new_templates}, {**classnames, **new_classes}
    domains = {
        "_source": "open_clip zero_shot_metadata; CLIP_benchmark en_zeroshot_classification_templates.json and "
                   "en_classnames.json; OpenAI CLIP data/prompts.md (vendor/sources/openai_clip_prompts.md) for "
                   f"the class names of {', '.join(sorted(new_classes))} and the templates of "
                   f"{', '.join(sorted(new_templates))} (see vendor/make_domains.py)",
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
    missing = [(table, name) for name in ELEVATER for table in ("classnames", "templates")
               if name not in domains[table]]
    assert not missing, missing
    (HERE / "domains.json").write_text(json.dumps(domains, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
