"""The committed toy-pretrained base CLIP: it is what `toyworld.pretrain` makes, and it has the long-tail weakness
the REACT demo and reproduction rely on."""

from dataclasses import asdict

import pytest

from toyworld.models import BASE, base_weights, load_from_file, register_configs
from toyworld.pretrain import FINGERPRINT_STEP, PretrainConfig, read_summary, still_reproduces


def test_committed_base_was_made_by_the_default_pretraining_config():
    summary = read_summary(base_weights())
    assert summary["config"] == asdict(PretrainConfig())
    assert summary["fingerprint_step"] == FINGERPRINT_STEP and summary["final_loss"] < 3.0
    _, _, preprocess = load_from_file(BASE, base_weights())  # through open_clip's --pretrained FILE path
    assert preprocess.transforms[0].size == 32


def test_pretraining_still_reproduces_the_committed_weights(demo_world):
    """Rerun the first steps of the committed run: same init, same batches, same updates, same fingerprint."""
    assert still_reproduces(demo_world, base_weights())
    assert not still_reproduces(demo_world, base_weights(), seed=1)  # the check can fail


def test_base_is_good_on_common_shapes_and_weak_on_rare_ones(demo_world, tmp_path):
    from react_eval import run

    register_configs()
    result = run(BASE, str(demo_world / "eval" / "classification"), task="zeroshot_classification", out=str(tmp_path),
                 pretrained=str(base_weights()))
    accuracy = result["details"]["recall"]
    shapes = list(demo_world_shapes())
    common, rare = shapes[:4], shapes[-4:]
    mean = lambda names: sum(accuracy[n] for n in names) / len(names)  # noqa: E731
    assert mean(common) > mean(rare) + 0.2, accuracy
    assert mean(common) > 0.5, accuracy


def demo_world_shapes():
    from toyworld import World

    return World().shapes  # in corpus-frequency order, most common first


def test_committed_longtail_base_was_made_by_its_recipe():
    """Reproduction v2's base: the longtail world's recipe; `nox -s reproduce` reruns its first 50 steps (the world
    is 100,000 images, too many to generate in the test suite) and stops if they do not match."""
    from toyworld import PRESETS
    from toyworld.pretrain import PRESET_RECIPES

    summary = read_summary(base_weights("longtail"))
    assert summary["config"] == asdict(PretrainConfig(**PRESET_RECIPES["longtail"]))
    assert summary["samples"] == PRESETS["longtail"]["n_samples"] and summary["fingerprint_step"] == FINGERPRINT_STEP
    _, _, preprocess = load_from_file(BASE, base_weights("longtail"))
    assert preprocess.transforms[0].size == 32


def test_pretrain_cli_refuses_a_world_of_another_preset(tmp_path, capsys):
    from toyworld import write_world
    from toyworld.pretrain import main

    write_world(tmp_path / "world", "tiny")
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "world"), str(tmp_path / "w.safetensors"), "--preset", "longtail"])
    assert stopped.value.code == 2 and "holds a tiny world, not longtail" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()
