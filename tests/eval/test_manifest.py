import json

from manifest_cases import check_round_trip_and_rejections, example_body

from react_eval import manifest as m

CLIP_BENCHMARK_FIELDS = ("dataset", "model", "pretrained", "task", "metrics", "language")


def test_eval_result_round_trips_and_rejects_bad_files(tmp_path):
    check_round_trip_and_rejections(tmp_path, m.write_manifest, m.read_manifest, m.ManifestError, m.EVAL_RESULT,
                                    "react-eval")


def test_eval_result_reads_as_a_clip_benchmark_result(tmp_path):
    body = example_body(m.EVAL_RESULT)
    m.write_manifest(str(tmp_path / "r.json"), m.EVAL_RESULT, body)
    plain = json.loads((tmp_path / "r.json").read_text())
    assert {k: plain[k] for k in CLIP_BENCHMARK_FIELDS} == {k: body[k] for k in CLIP_BENCHMARK_FIELDS}
    assert isinstance(plain["metrics"]["acc1"], float)
