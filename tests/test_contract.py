"""The vendored contract (vendor/*.py, copied into each package): domain files, atomic writes, the strict
writer check, the image decoder. Each behaviour is checked through the packages' copies, so a package that
stops using the shared reader shows up here."""

import json
import os

import numpy as np
import pytest

import react_eval.domain as eval_domain
import react_index.domain as index_domain
from react_index import _imagerows, _manifests

READERS = [index_domain, eval_domain]


@pytest.mark.parametrize("domain", READERS, ids=["react-index", "react-eval"])
def test_template_files_mean_the_same_in_every_package(domain, tmp_path):
    listed = ["a photo of a {}.", "art of the {c}."]
    (tmp_path / "t.json").write_text(json.dumps(listed))
    (tmp_path / "t.txt").write_text("\n# a comment\na photo of a {}.\n\n   art of the {c}.  \n")
    want = ["a photo of a {c}.", "art of the {c}."]
    assert domain.load_templates(str(tmp_path / "t.json")) == want  # a JSON list is a list, not lines
    assert domain.load_templates(str(tmp_path / "t.txt")) == want
    assert domain.load_templates(None, fallback=["itap of a {}."]) == ["itap of a {c}."]
    assert len(domain.load_templates(None)) == 80


@pytest.mark.parametrize("domain", READERS, ids=["react-index", "react-eval"])
def test_template_errors_name_the_file_and_line(domain, tmp_path):
    (tmp_path / "nohole.txt").write_text("a photo of a {}.\n\nno class here\n")
    with pytest.raises(domain.DomainError, match=r"nohole.txt: line 3: template 'no class here' has no \{\}"):
        domain.load_templates(str(tmp_path / "nohole.txt"))
    (tmp_path / "nohole.json").write_text('["a {}", "plain"]')
    with pytest.raises(domain.DomainError, match=r"nohole.json: entry 2: template 'plain'"):
        domain.load_templates(str(tmp_path / "nohole.json"))
    (tmp_path / "dup.txt").write_text("a {}\nb {}\na {}\n")
    with pytest.raises(domain.DomainError, match=r"dup.txt: line 3: template 'a \{c\}' repeats line 1"):
        domain.load_templates(str(tmp_path / "dup.txt"))
    (tmp_path / "broken.json").write_text('["a {}",\n')
    with pytest.raises(domain.DomainError, match=r"broken.json: line 2: not valid JSON"):
        domain.load_templates(str(tmp_path / "broken.json"))
    with pytest.raises(domain.DomainError, match=r"missing.txt: no such file"):
        domain.load_templates(str(tmp_path / "missing.txt"))


def test_class_files_txt_json_unicode_duplicates_and_synonyms(tmp_path):
    load = index_domain.load_classes
    (tmp_path / "c.txt").write_text("Ćevapi\n\n  crème brûlée \n日本酒\n", encoding="utf-8")
    assert [c.name for c in load(str(tmp_path / "c.txt"))] == ["Ćevapi", "crème brûlée", "日本酒"]
    # a decomposed é (e + combining accent) is the same class name as the composed one
    (tmp_path / "nfd.txt").write_text("cre\u0300me\ncrème\n", encoding="utf-8")
    with pytest.raises(_manifests.UserError, match=r"nfd.txt: line 2: class name 'crème' repeats line 1"):
        load(str(tmp_path / "nfd.txt"))
    (tmp_path / "c.json").write_text('{"star": ["five-pointed star", "star"], "ring": "band", "dot": []}')
    got = load(str(tmp_path / "c.json"))
    T = index_domain.TargetClass
    assert got == [T("star", ("five-pointed star",)), T("ring", ("band",)), T("dot")]
    (tmp_path / "l.json").write_text('["a", "b"]')
    assert [c.name for c in load(str(tmp_path / "l.json"))] == ["a", "b"]
    (tmp_path / "bad.json").write_text('["a", 3]')
    with pytest.raises(_manifests.UserError, match=r"bad.json: entry 2 is 3, expected a string"):
        load(str(tmp_path / "bad.json"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(_manifests.UserError, match=r"empty.txt: no class names"):
        load(str(tmp_path / "empty.txt"))
    assert eval_domain.class_names(str(tmp_path / "c.txt")) == ["Ćevapi", "crème brûlée", "日本酒"]


def test_synonym_files_json_and_txt(tmp_path):
    (tmp_path / "s.txt").write_text("car: automobile, motorcar\n\ncat: kitty\n")
    (tmp_path / "s.json").write_text('{"car": ["automobile", "motorcar"], "cat": "kitty"}')
    want = {"car": ("automobile", "motorcar"), "cat": ("kitty",)}
    assert index_domain.load_synonyms(str(tmp_path / "s.txt")) == want
    assert index_domain.load_synonyms(str(tmp_path / "s.json")) == want
    classes = index_domain.with_synonyms([index_domain.TargetClass("car"), index_domain.TargetClass("cat")], want, "s")
    assert classes[0].names == ("car", "automobile", "motorcar")
    with pytest.raises(_manifests.UserError, match="synonyms given for unknown class"):
        index_domain.with_synonyms([index_domain.TargetClass("car")], want, "s.txt")
    (tmp_path / "bad.txt").write_text("car automobile\n")
    with pytest.raises(_manifests.UserError, match=r"bad.txt: line 1: expected 'class: synonym, synonym'"):
        index_domain.load_synonyms(str(tmp_path / "bad.txt"))


def test_atomic_writes_leave_no_temp_and_clean_a_dead_writers_leftovers(tmp_path):
    target = tmp_path / "out.parquet"
    dead = tmp_path / "out.parquet.tmp-999999999-deadbeef"  # no process has this pid
    dead.write_bytes(b"half")
    alive = tmp_path / f"out.parquet.tmp-{os.getpid()}-cafe0000"  # a live writer's file is left alone
    alive.write_bytes(b"busy")
    _manifests.write_bytes_atomic(str(target), b"whole")
    assert target.read_bytes() == b"whole" and not dead.exists() and alive.exists()
    with pytest.raises(RuntimeError), _manifests.open_atomic(str(tmp_path / "never.bin")) as f:
        f.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name])


def test_writers_cannot_emit_keys_the_spec_does_not_declare(tmp_path):
    from manifest_cases import example_body

    body = example_body(_manifests.STORE)
    _manifests.write_manifest(str(tmp_path / "ok.json"), _manifests.STORE, body, producer={"name": "t", "version": "0"})
    body["undeclared"] = 1
    with pytest.raises(TypeError, match="bug: .*key the spec does not declare.*undeclared"):
        _manifests.write_manifest(str(tmp_path / "bad.json"), _manifests.STORE, body,
                                  producer={"name": "t", "version": "0"})
    assert not (tmp_path / "bad.json").exists()


def test_sixteen_bit_greyscale_keeps_its_tones_and_bad_bytes_are_named(tmp_path):
    from PIL import Image

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)  # 0 … 65,520
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # uint16 → a 16-bit greyscale PNG
    data = (tmp_path / "deep.png").read_bytes()
    with Image.open(tmp_path / "deep.png") as raw:
        clipped = np.asarray(raw.convert("RGB"))
    rgb = np.asarray(_imagerows.decode_rgb(data, "deep.png"))
    assert rgb.shape == (64, 64, 3)
    assert np.abs(rgb[..., 0].astype(int) - np.round(ramp / 257)).max() <= 1  # the tones, scaled to 8 bits
    assert (clipped == 255).mean() > 0.9  # what Pillow's plain convert does: almost all white
    with pytest.raises(_imagerows.CorruptImage, match=r"cut.png: not a decodable image"):
        _imagerows.decode_rgb(data[: len(data) // 2], "cut.png")
    with pytest.raises(_imagerows.MissingImage, match="short read"):
        _imagerows.read_image_bytes(str(tmp_path / "deep.png"), 10, len(data))
    with pytest.raises(_imagerows.MissingImage):
        _imagerows.read_image_bytes(str(tmp_path / "nope.png"))


def test_every_package_refuses_pickles_and_foreign_weights_by_name(tiny_weights, tmp_path):
    """One open_clip loader (`_openclip.py`) behind react-index's encoder, react-tune's base and react-eval's models."""
    import torch

    from react_eval.loaders import load
    from react_index.clip_embed import QueryEncoder
    from react_tune.model import load_base
    from toyworld.models import TINY, TOY, save_random_init

    model, *_ = load_base(TINY, str(tiny_weights))
    torch.save(model, tmp_path / "whole-model.pt")  # a pickled module: open_clip's weights_only load refuses it
    other = save_random_init(TOY, tmp_path / "toy.safetensors")
    loaders = {"react-index": lambda w: QueryEncoder(TINY, w, "cpu"), "react-tune": lambda w: load_base(TINY, w),
               "react-eval": lambda w: load(TINY, w, "cpu")}
    for package, load_with in loaders.items():
        with pytest.raises(ValueError, match=r"whole-model\.pt: not a weights file .* safetensors") as pickled:
            load_with(str(tmp_path / "whole-model.pt"))
        with pytest.raises(ValueError, match=rf"toy\.safetensors: these weights do not fit {TINY}: tensor") as foreign:
            load_with(str(other))
        for error in (pickled.value, foreign.value):  # each package's own UserError: its CLI prints one line
            assert type(error).__name__ == "UserError" and type(error).__module__.startswith(package.replace("-", "_"))
