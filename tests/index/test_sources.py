import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from react_index.sources import SourceError, discover, expand_braces, expand_inputs, read_samples


def test_brace_patterns_expand_like_a_shell_but_never_silently_to_one_file():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("x{abc}.tar") == ["x{abc}.tar"]


def test_inputs_expand_braces_and_globs_and_name_what_is_missing(toy_root):
    corpus = toy_root / "corpus"
    uris = expand_inputs([f"{corpus}/{{00000..00003}}.tar"])
    assert uris == [f"{corpus}/0000{i}.tar" for i in range(4)]
    assert expand_inputs([f"{corpus}/*.tar"]) == uris
    with pytest.raises(SourceError, match=r"00004.tar: no such file or folder \(quote brace patterns"):
        expand_inputs([f"{corpus}/{{00000..00009}}.tar"])
    with pytest.raises(SourceError, match="no input matches"):
        expand_inputs([f"{corpus}/*.zip"])


def test_tar_samples_carry_exact_member_offsets(toy_root):
    shard = toy_root / "corpus" / "00001.tar"
    (s,) = discover([str(shard)])
    samples = list(read_samples(s))
    assert len(samples) == 100 and s.kind == "tar" and s.name == "00001"
    raw = shard.read_bytes()
    with tarfile.open(shard) as tar:
        for sample in samples[:10]:
            member = tar.getmember(sample["key"] + ".jpg")
            assert raw[sample["image_offset"]:sample["image_offset"] + sample["image_length"]] == sample["image"] \
                == tar.extractfile(member).read()
            assert sample["caption"] == tar.extractfile(sample["key"] + ".txt").read().decode()
            assert sample["url"].endswith(sample["key"] + ".jpg") and sample["image_uri"] == str(shard)


def test_truncated_tar_is_an_error_naming_the_shard(tmp_path, toy_root):
    data = (toy_root / "corpus" / "00000.tar").read_bytes()
    bad = tmp_path / "cut.tar"
    bad.write_bytes(data)
    (s,) = discover([str(bad)])
    assert len(list(read_samples(s))) == 100
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
        end_of_members = last.offset_data + -(-last.size // 512) * 512
    # cut inside a header, inside data, and exactly between members (no end-of-archive blocks)
    for cut in (len(data) // 2 + 100, len(data) // 2 + 1000, end_of_members):
        bad.write_bytes(data[:cut])
        with pytest.raises(SourceError, match=r"cut.tar: unreadable tar input"):
            list(read_samples(s))


def test_folder_and_parquet_inputs(tmp_path, toy_root):
    with tarfile.open(toy_root / "corpus" / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    folder = tmp_path / "folder"
    folder.mkdir()
    keys = sorted({n.split(".")[0] for n in members})[:5]
    for k in keys:
        (folder / f"{k}.jpg").write_bytes(members[f"{k}.jpg"])
        (folder / f"{k}.txt").write_bytes(members[f"{k}.txt"])
    (f,) = discover([str(folder)])
    got = list(read_samples(f))
    assert [g["key"] for g in got] == keys and f.kind == "folder"
    assert all(g["image"] == members[g["key"] + ".jpg"] and g["image_uri"] == str(folder / f"{g['key']}.jpg")
               for g in got)
    table = pa.table({"img": [members[f"{k}.jpg"] for k in keys], "text": [members[f"{k}.txt"].decode() for k in keys],
                      "key": keys})
    pq.write_table(table, tmp_path / "bytes.parquet")
    (p,) = discover([str(tmp_path / "bytes.parquet")])
    got = list(read_samples(p, image_column="img", caption_column="text"))
    assert [g["image"] for g in got] == [members[f"{k}.jpg"] for k in keys] and got[2]["source_row"] == 2
    with pytest.raises(SourceError, match="column 'image' not found .* --image-column"):
        list(read_samples(p))
    paths = pa.table({"image": [str(folder / f"{k}.jpg") for k in keys], "caption": ["c"] * 5})
    pq.write_table(paths, tmp_path / "paths.parquet")
    (p,) = discover([str(tmp_path / "paths.parquet")])
    got = list(read_samples(p))
    assert got[0]["image"] == members[f"{keys[0]}.jpg"] and got[0]["image_uri"] == str(folder / f"{keys[0]}.jpg")


def test_unknown_formats_and_name_clashes(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(SourceError, match="notes.md: unknown input format"):
        discover([str(tmp_path / "notes.md")])
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w"):
            pass
        (tmp_path / sub / "00000.tar").write_bytes(buf.getvalue())
    names = [s.name for s in discover([str(tmp_path / "a" / "00000.tar"), str(tmp_path / "b" / "00000.tar")])]
    assert names == ["00000-00000", "00001-00000"]


def test_an_img2dataset_output_folder_stands_for_its_tar_shards(tmp_path, toy_root):
    """img2dataset writes 00000.tar with 00000.parquet (per-sample status) and 00000_stats.json beside it; the
    folder itself is an input (its status files are not)."""
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from react_index.sources import discover, expand_inputs, read_samples

    out = tmp_path / "i2d"
    out.mkdir()
    for i, name in enumerate(("00001", "00002")):
        shutil.copy(toy_root / "corpus" / f"{name}.tar", out / f"{i:05d}.tar")
        pq.write_table(pa.table({"url": ["http://x/a.jpg"], "status": ["success"], "key": [f"{i:05d}0000"]}),
                       out / f"{i:05d}.parquet")
        (out / f"{i:05d}_stats.json").write_text(json.dumps({"successes": 100, "count": 100}))
    (out / "stats.json").write_text("{}")
    shards = discover(expand_inputs([str(out)]))
    assert [(s.kind, s.name, s.uri) for s in shards] == [("tar", "00000", f"{out}/00000.tar"),
                                                         ("tar", "00001", f"{out}/00001.tar")]
    assert [s.samples for s in shards] == [100, 100]  # from img2dataset's stats: the embedding bar's total
    assert sum(1 for _ in read_samples(shards[0])) == 100
    assert discover(expand_inputs([f"{out}/*.tar"])) == shards  # the same as naming the tars
