"""The report names models as people do — `ViT-B-32 (laion400m_e32)`, `ViT-B-32 (base.safetensors)`,
`react:pets` — never by an absolute venv or checkpoint path, in its columns and in its charts' legends; two models
whose short names collide get enough of their paths to stay apart."""

import re
import shutil
import subprocess

from click.testing import CliRunner

import react_eval.reporting as reporting
from react_eval.cli import main
from react_eval.manifest import EVAL_RESULT, write_manifest
from react_eval.reporting import model_labels

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VENV_WEIGHTS = "/home/user/project/.nox/tests/lib/python3.11/site-packages/toyworld/weights/base.safetensors"


def _result(folder, name, model, pretrained, spec, acc):
    body = {"dataset": "toy", "model": model, "pretrained": pretrained, "task": "zeroshot_classification",
            "metrics": {"acc1": acc}, "language": "en", "model_spec": spec, "dataset_uri": "toy",
            "dataset_checksum": "sha256:0", "n_samples": 4, "seconds": 1.0,
            "details": {"recall": {"circle": acc, "square": 1 - acc}}}
    write_manifest(str(folder / f"{name}.json"), EVAL_RESULT, body)


def _labels(*identities):
    return model_labels([{"model": m, "pretrained": p, "model_spec": s} for m, p, s in identities])


def test_models_are_named_without_absolute_paths():
    labels = _labels(("ViT-B-32", "laion400m_e32", "ViT-B-32"), ("react-tiny", VENV_WEIGHTS, "react-tiny"),
                     ("react:0123456789ab:react-tiny", VENV_WEIGHTS, "react:/home/user/runs/pets/ckpt"),
                     ("ViT-B-32", "", "ViT-B-32"))
    assert sorted(labels.values()) == ["ViT-B-32 (laion400m_e32)", "ViT-B-32 (random)", "react-tiny (base.safetensors)",
                                       "react:ckpt"]


def test_colliding_short_names_get_more_of_their_paths():
    labels = _labels(("react:aaa:T", "", "react:/runs/pets/ckpt"), ("react:bbb:T", "", "react:/runs/food/ckpt"),
                     ("T", "/a/x/w.safetensors", "T"), ("T", "/b/x/w.safetensors", "T"))
    assert sorted(labels.values()) == ["T (a/x/w.safetensors)", "T (b/x/w.safetensors)", "react:food/ckpt",
                                       "react:pets/ckpt"]
    # one spec, two checkpoints behind it (retrained in place): numbered, never merged
    twice = _labels(("react:aaa:T", "", "react:ckpt"), ("react:bbb:T", "", "react:ckpt"))
    assert sorted(twice.values()) == ["react:ckpt", "react:ckpt #2"]


def test_report_columns_and_legends_show_model_names_and_render_in_chromium(tmp_path, monkeypatch):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for this test (nox -s tests installs it)"
    _result(tmp_path / "a", "base", "react-tiny", VENV_WEIGHTS, "react-tiny", 0.40)
    _result(tmp_path / "b", "react", "react:0123456789ab:react-tiny", VENV_WEIGHTS,
            "react:/home/user/runs/pets/ckpt", 0.55)
    legends = []
    chart = reporting._bar_chart
    monkeypatch.setattr(reporting, "_bar_chart", lambda names, series, title, *rest: legends.append(list(series))
                        or chart(names, series, title, *rest))
    out = CliRunner().invoke(main, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--html",
                                    str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert headers == ["dataset / metric", "react-tiny (base.safetensors)", "react:ckpt"]
    assert legends == [["react-tiny (base.safetensors)", "react:ckpt"]]
    assert "/home/user" not in re.sub(r"title='[^']*'", "", page)  # full paths only in the hover titles
    assert f"title='react-tiny · {VENV_WEIGHTS}'" in page
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--virtual-time-budget=5000",
                    "--window-size=1000,800", f"--screenshot={shot}", f"file://{tmp_path / 'r.html'}"],
                   capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    keep = __import__("os").environ.get("REACT_KEEP_SCREENSHOTS")
    if keep:
        shutil.copy(shot, keep)


def test_target_classes_are_marked_with_a_target_vs_rest_table(tmp_path, monkeypatch):
    """--target-classes: the customized domain's classes are starred in the charts and the page says how the
    models do on them and on the rest (the demo's question), from the per-class recalls."""
    _result(tmp_path / "a", "base", "react-tiny", VENV_WEIGHTS, "react-tiny", 0.40)
    _result(tmp_path / "b", "react", "react:0123456789ab:react-tiny", VENV_WEIGHTS, "react:/runs/pets/ckpt", 0.70)
    (tmp_path / "target.txt").write_text("circle\n")
    marked = []
    chart = reporting._bar_chart
    monkeypatch.setattr(reporting, "_bar_chart", lambda names, series, title, target=frozenset():
                        marked.append(set(target)) or chart(names, series, title, target))
    out = CliRunner().invoke(main, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--html",
                                    str(tmp_path / "r.html"), "--target-classes", str(tmp_path / "target.txt")])
    assert out.exit_code == 0, out.output
    assert marked == [{"circle"}]
    page = (tmp_path / "r.html").read_text()
    assert "Target classes (★): <span class='target'>circle</span>" in page
    rows = dict(re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", page))
    target_row = next(v for k, v in rows.items() if "target ★" in k)
    rest_row = next(v for k, v in rows.items() if k.startswith("rest"))
    assert re.findall(r"<td>([\d.]+)</td>", target_row) == ["40.00", "70.00"]  # circle's recall, per model
    assert re.findall(r"<td>([\d.]+)</td>", rest_row) == ["60.00", "30.00"]  # square's
    # without the option nothing is marked
    marked.clear()
    assert CliRunner().invoke(main, ["report", str(tmp_path / "a"), "--html", str(tmp_path / "s.html")]).exit_code == 0
    assert marked == [set()] and "target ★" not in (tmp_path / "s.html").read_text()
