from manifest_cases import check_retrieval_reader, check_round_trip_and_rejections

from react_tune import manifest as m


def test_checkpoint_manifest_round_trips_and_rejects_bad_files(tmp_path):
    check_round_trip_and_rejections(tmp_path, m.write_manifest, m.read_manifest, m.ManifestError, m.CHECKPOINT,
                                    "react-tune")


def test_reads_retrieval_sets_written_from_the_spec_without_react_index(tmp_path):
    check_retrieval_reader(tmp_path, m.read_retrieval_manifest, m.ManifestError)


def test_refuses_a_newer_retrieval_version_naming_react_tune(tmp_path):
    import pytest
    from manifest_cases import write_retrieval_fixture

    rows = write_retrieval_fixture(tmp_path, version=2)
    with pytest.raises(m.ManifestError, match=r"set.parquet.json: field 'version' is 2, but this react-tune reads "
                                              r"'react.retrieval' manifests up to version 1; upgrade react-tune"):
        m.read_retrieval_manifest(str(rows))
