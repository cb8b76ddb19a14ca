import json
import tarfile

from PIL import Image
from pycocotools.coco import COCO

from toyworld import SHAPES, TEMPLATES


def test_classification_folder_is_balanced_with_sorted_classnames(toy_root):
    root = toy_root / "eval" / "classification"
    names = (root / "classnames.txt").read_text().split("\n")[:-1]
    assert names == sorted(SHAPES) == sorted(p.name for p in root.iterdir() if p.is_dir())
    for name in names:
        files = sorted((root / name).glob("*.jpg"))
        assert len(files) == 4
        assert Image.open(files[0]).size == (32, 32)
    templates = (root / "templates.txt").read_text().split("\n")[:-1]
    assert templates == list(TEMPLATES) and all("{c}" in t for t in templates)
    info = json.loads((root / "toyworld.json").read_text())
    assert info["corpus_frequency"]["circle"] > 10 * info["corpus_frequency"]["chevron"]


def test_wds_layout_matches_clip_benchmark_and_the_folder_images(toy_root):
    wds, folder = toy_root / "eval" / "classification_wds", toy_root / "eval" / "classification"
    assert (wds / "test" / "nshards.txt").read_text().strip() == "1"
    assert (wds / "classnames.txt").read_text() == (folder / "classnames.txt").read_text()
    assert (wds / "zeroshot_classification_templates.txt").read_text() == (folder / "templates.txt").read_text()
    names = (wds / "classnames.txt").read_text().split()
    folder_images = {f.read_bytes(): names.index(f.parent.name) for f in folder.rglob("*.jpg")}
    with tarfile.open(wds / "test" / "0.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    keys = sorted({n.rsplit(".", 1)[0] for n in members})
    assert len(keys) == len(folder_images) == 64
    for key in keys:
        assert folder_images[members[f"{key}.jpg"]] == int(members[f"{key}.cls"])


def test_retrieval_set_is_karpathy_format_with_several_captions(toy_root):
    root = toy_root / "eval" / "retrieval"
    data = json.loads((root / "captions.json").read_text())
    assert len(data["images"]) == 24
    sentids = []
    for im in data["images"]:
        assert im["split"] == "test" and (root / im["filepath"] / im["filename"]).exists()
        raws = [s["raw"] for s in im["sentences"]]
        assert len(raws) == len(set(raws)) == 5
        assert all(s["imgid"] == im["imgid"] and s["tokens"] for s in im["sentences"])
        sentids += im["sentids"]
    assert sentids == list(range(len(sentids)))


def test_detection_set_loads_in_pycocotools_with_boxes_inside_images(toy_root):
    root = toy_root / "eval" / "detection"
    coco = COCO(str(root / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
    assert len(coco.getImgIds()) == 12
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert 1 <= len(anns) <= 4 and (root / "images" / img["file_name"]).exists()
        for a in anns:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"] and w > 2 and h > 2
            assert 0 < a["area"] <= w * h
    split = json.loads((root / "split.json").read_text())
    assert split["novel"] == list(SHAPES[-4:]) and sorted(split["base"] + split["novel"]) == sorted(SHAPES)


def test_boxes_come_from_the_drawn_pixels():
    from toyworld.draw import Placed, mask_box, shape_mask

    # a square of circumradius 10 at the centre spans 32 ± 7.07 px
    box = mask_box(shape_mask(Placed("square", "red", 32, 32, 10, 0.0), 64))
    assert box == (25.0, 25.0, 14.0, 14.0)
    ring = shape_mask(Placed("ring", "red", 32, 32, 10, 0.0), 64)
    assert ring[32, 32] == 0 and ring[32, 23] == 1  # the hole is empty, the band is full
