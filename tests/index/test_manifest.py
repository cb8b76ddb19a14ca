import json

import pyarrow.parquet as pq
import pytest
from manifest_cases import check_retrieval_reader, check_round_trip_and_rejections, example_body, retrieval_rows

from react_index import manifest as m


@pytest.mark.parametrize("kind", [m.STORE, m.INDEX])
def test_store_and_index_manifests_round_trip_and_reject_bad_files(tmp_path, kind):
    check_round_trip_and_rejections(tmp_path, m.write_manifest, m.read_manifest, m.ManifestError, kind, "react-index")


def test_retrieval_manifest_written_by_react_index_reads_back_and_with_plain_pyarrow(tmp_path):
    rows = tmp_path / "pets.parquet"
    pq.write_table(retrieval_rows(6), rows)
    body = {k: v for k, v in example_body(m.RETRIEVAL).items() if k not in ("rows_file", "rows", "rows_sha256")}
    body |= {"classes": ["star", "ring"], "counts_per_class": [3, 3], "unique_samples": 6}
    written = m.write_retrieval_manifest(str(rows), body, [])
    assert written["rows"] == 6 and written["rows_file"] == "pets.parquet"
    sidecar = json.loads((tmp_path / "pets.parquet.json").read_text())
    assert sidecar == written
    assert m.read_retrieval_manifest(str(rows))["id"] == written["id"]
    table = pq.read_table(rows)  # no react code needed to read the rows
    assert table.column("class_name").to_pylist()[:2] == ["star", "ring"]
    assert table.column("image_offset").to_pylist()[0] == 512


def test_retrieval_writer_refuses_rows_that_break_the_contract(tmp_path):
    rows = tmp_path / "bad.parquet"
    pq.write_table(retrieval_rows().drop_columns(["caption"]), rows)
    with pytest.raises(m.ManifestError, match="bad.parquet: column 'caption' is missing"):
        m.write_retrieval_manifest(str(rows), example_body(m.RETRIEVAL), [])
    assert not (tmp_path / "bad.parquet.json").exists()


def test_retrieval_reader_accepts_the_spec_and_refuses_bad_sets(tmp_path):
    check_retrieval_reader(tmp_path, m.read_retrieval_manifest, m.ManifestError)
