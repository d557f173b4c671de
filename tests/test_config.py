import json

import pytest

from ldetok_lite.config import ConfigError, DataConfig, Preset, TokenizerConfig, TrainConfig
from ldetok_lite.presets import PRESET_NAMES, load_preset


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_loads_and_round_trips(name, tmp_path):
    p = load_preset(name)
    assert p.name == name
    path = p.save_json(tmp_path / "config.json")
    again = Preset.load_json(path)
    assert again == p
    assert json.loads(path.read_text())["__class__"] == "Preset"


def test_unknown_preset_is_one_line_error():
    with pytest.raises(ConfigError) as e:
        load_preset("tiy")
    msg = str(e.value)
    assert "tiy" in msg and "tiny" in msg and "\n" not in msg


def test_replace_rejects_unknown_key_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown TokenizerConfig key 'gama'.*did you mean 'gamma'"):
        TokenizerConfig().replace(gama=2.0)


def test_replace_rejects_wrong_type():
    with pytest.raises(ConfigError, match=r"TrainConfig.steps must be int, got '10'"):
        TrainConfig().replace(steps="10")
    with pytest.raises(ConfigError, match="bool"):
        TokenizerConfig().replace(use_additive_noise=1)


def test_replace_checks_ranges():
    with pytest.raises(ConfigError, match=r"mask_ratio=1.0 is out of range"):
        TokenizerConfig().replace(mask_ratio=1.0)
    with pytest.raises(ConfigError, match=r"gamma=-1.0 is out of range"):
        TokenizerConfig().replace(gamma=-1.0)
    with pytest.raises(ConfigError, match="dataset='imgnet'"):
        DataConfig().replace(dataset="imgnet")


def test_int_is_widened_to_float_and_frozen():
    cfg = TokenizerConfig().replace(gamma=2)
    assert isinstance(cfg.gamma, float) and cfg.gamma == 2.0
    with pytest.raises(Exception):
        cfg.gamma = 3.0  # frozen


def test_preset_dotted_override():
    p = load_preset("tiny").override(**{"tokenizer.gamma": 0.0, "data.img_size": 64})
    assert p.tokenizer.gamma == 0.0 and p.data.img_size == 64
    with pytest.raises(ConfigError, match="unknown config group 'tokenzier'"):
        p.override(**{"tokenzier.gamma": 1.0})
    with pytest.raises(ConfigError, match="group.key"):
        p.override(gamma=1.0)


def test_effective_lr_follows_the_paper_rule():
    t = TrainConfig(blr=1e-4, batch_size=1024)
    assert t.effective_lr == pytest.approx(4e-4)  # the official README recipe
    assert TrainConfig(lr=2e-4, batch_size=1024).effective_lr == 2e-4


def test_full_preset_matches_the_paper_recipe():
    p = load_preset("full")
    assert p.tokenizer.model == "detok_BB" and p.data.img_size == 256
    assert p.tokenizer_train.batch_size == 1024 and p.tokenizer_train.steps == 200 * 1251
    assert p.tokenizer.gamma == 3.0 and p.tokenizer.mask_ratio == 0.7
    assert p.tokenizer.gan_start_step == 100 * 1251 and p.tokenizer.gan_weight == 0.1
    assert p.generator_train.lr == 2e-4 and p.generator_train.lr_schedule == "constant"
