"""Built-in class names and templates resolve through react-eval's own lookups (`--classnames NAME`,
`--templates NAME`) for every dataset with an ELEVATER metric and every ELEVATER dataset."""

import pytest
from builtin_domains import ELEVATER, FROM_OPENAI_PROMPTS, VOC2007

from react_eval.datasets import load_classification
from react_eval.domain import builtin, dataset_metric, load_templates

NAMES = sorted({*ELEVATER, *builtin()["metrics"], *FROM_OPENAI_PROMPTS})


def _table(tmp_path, label: str) -> str:
    (tmp_path / "test.csv").write_text(f"path,label\n/img/0.jpg,{label}\n")
    return str(tmp_path / "test.csv")


@pytest.mark.parametrize("name", NAMES)
def test_every_elevater_dataset_has_built_in_class_names_and_templates(name, tmp_path):
    ds = load_classification(_table(tmp_path, 0), classnames=name)
    assert ds.classnames == builtin()["classnames"][name]
    assert len(ds.classnames) >= 2 and len(set(ds.classnames)) == len(ds.classnames)
    templates = load_templates(name)  # a name that is not built in is read as a file, and fails
    assert templates and all("{c}" in t and "{}" not in t for t in templates)
    assert templates == [t.replace("{}", "{c}") for t in builtin()["templates"][name]]


def test_class_names_from_openai_prompts_have_the_datasets_sizes_and_label_order(tmp_path):
    for name, (n, first, last) in FROM_OPENAI_PROMPTS.items():
        names = builtin()["classnames"][name]
        assert (len(names), names[0], names[-1]) == (n, first, last), name
    assert builtin()["classnames"]["voc2007"] == builtin()["classnames"]["voc2007_multilabel"] == VOC2007
    # a csv label given as a class name resolves to the dataset's label index
    assert load_classification(_table(tmp_path, "diningtable"), classnames="voc2007").labels == [10]
    assert load_classification(_table(tmp_path, "truck"), classnames="cifar10").labels == [9]
    # Hateful Memes: CLIP's template; class 1 (hateful) is the positive class of its ROC AUC
    assert load_templates("hateful_memes") == ["a {c}."]
    assert dataset_metric("hateful_memes") == "roc_auc"
    assert builtin()["classnames"]["hateful_memes"][1] == "hatespeech meme"
    # CLIP_benchmark's templates keep priority over prompts.md's (RESISC45: its 4, not CLIP's 18)
    assert len(load_templates("resisc45")) == 4
