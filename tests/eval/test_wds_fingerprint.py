"""P5: a CLIP_benchmark wds dataset is listed without reading its images (tar headers by seeking, `.cls` labels
read), and its checksum is a fingerprint of that listing that still changes when the data does."""

import io
import shutil
import tarfile

import fsspec.implementations.local as local
import pytest

from react_eval.datasets import DatasetError, load_classification

IMAGE_BYTES = 20_000


def _write_wds(root, images: dict[str, bytes], labels: dict[str, int], per_shard=4, compressed=False):
    """A wds folder in CLIP_benchmark's layout; image bytes need not decode (listing never decodes)."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    keys = sorted(images)
    shards = [keys[i:i + per_shard] for i in range(0, len(keys), per_shard)]
    for s, shard in enumerate(shards):
        with tarfile.open(root / "test" / f"{s}.tar", "w:gz" if compressed else "w") as tar:
            for key in shard:
                for name, data in ((f"{key}.jpg", images[key]), (f"{key}.cls", str(labels[key]).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
    (root / "classnames.txt").write_text("cat\ndog\nbird\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return root


def _dataset(tmp_path, name="wds_toy", **changes):
    images = {f"s{i:03d}": bytes([i]) * IMAGE_BYTES for i in range(10)}
    labels = {f"s{i:03d}": i % 3 for i in range(10)}
    for key, value in changes.items():
        (images if isinstance(value, bytes) else labels)[key] = value
    return _write_wds(tmp_path / name, images, labels)


def test_listing_a_wds_dataset_reads_its_tar_headers_not_its_images(tmp_path, monkeypatch):
    root = _dataset(tmp_path)
    read = {"tar": 0}
    original = local.LocalFileOpener.read

    def counting_read(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        if str(self.path).endswith(".tar"):
            read["tar"] += len(data)
        return data

    monkeypatch.setattr(local.LocalFileOpener, "read", counting_read)
    ds = load_classification(str(root))
    shard_bytes = sum(p.stat().st_size for p in (root / "test").glob("*.tar"))
    assert len(ds.images) == 10 and ds.labels == [i % 3 for i in range(10)]
    assert ds.images[0] == ("tar", f"{root}/test/0.tar", 512, IMAGE_BYTES)  # the member's offset and size
    # 10 images of 20 kB, 20 members: headers and .cls blocks only (a few kB), never the image bytes
    assert 0 < read["tar"] < 0.1 * shard_bytes, (read, shard_bytes)


def test_the_fingerprint_is_the_datasets_identity_not_its_location(tmp_path):
    first = load_classification(str(_dataset(tmp_path)))
    assert first.checksum.startswith("sha256-listing:")
    copy = shutil.copytree(tmp_path / "wds_toy", tmp_path / "elsewhere" / "wds_toy")
    assert load_classification(str(copy)).checksum == first.checksum  # same data, another folder, other mtimes


@pytest.mark.parametrize("change", [
    {"s003": b"\x07" * (IMAGE_BYTES + 1)},  # an image rewritten with another size
    {"s003": 2},  # a sample relabelled (.cls)
])
def test_a_changed_sample_changes_the_fingerprint(tmp_path, change):
    base = load_classification(str(_dataset(tmp_path, "a"))).checksum
    assert load_classification(str(_dataset(tmp_path, "b", **change))).checksum != base


def test_changed_class_names_templates_or_sample_set_change_the_fingerprint(tmp_path):
    root = _dataset(tmp_path)
    base = load_classification(str(root)).checksum
    (root / "zeroshot_classification_templates.txt").write_text("a drawing of a {c}.\n")
    templates = load_classification(str(root)).checksum
    (root / "classnames.txt").write_text("cat\ndog\nsparrow\n")
    names = load_classification(str(root)).checksum
    assert len({base, templates, names}) == 3
    fewer = _write_wds(tmp_path / "fewer", {f"s{i:03d}": bytes([i]) * IMAGE_BYTES for i in range(9)},
                       {f"s{i:03d}": i % 3 for i in range(9)})
    assert load_classification(str(fewer)).checksum != base


def test_a_same_size_rewrite_is_not_seen_by_the_listing_as_documented(tmp_path):
    base = load_classification(str(_dataset(tmp_path, "a"))).checksum
    same_size = load_classification(str(_dataset(tmp_path, "b", s003=b"\x09" * IMAGE_BYTES))).checksum
    assert same_size == base  # docs/react-eval.md says so: only reading every image would see it


def test_a_compressed_or_missing_shard_is_an_error_naming_it(tmp_path):
    root = _write_wds(tmp_path / "gz", {"s0": b"x" * 100}, {"s0": 0}, compressed=True)
    with pytest.raises(DatasetError, match=r"gz/test/0.tar: not an uncompressed tar file"):
        load_classification(str(root))
    root = _dataset(tmp_path)
    (root / "test" / "nshards.txt").write_text("4\n")
    with pytest.raises(DatasetError, match=r"test/3.tar: no such shard \(test/nshards.txt says 4\)"):
        load_classification(str(root))
