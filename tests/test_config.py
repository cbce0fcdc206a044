"""Config resolution: defaults in dataclasses, presets and --set only override, errors name keys."""

import json
import subprocess
import sys

import pytest

from pop_tf import config as config_lib
from pop_tf.config import ConfigError


def test_defaults_come_from_the_dataclasses():
    cfg = config_lib.resolve()
    assert cfg.ingest == config_lib.IngestConfig()
    assert cfg.synth == config_lib.SynthConfig()


def test_presets_only_override_and_paper_is_256():
    demo, paper = config_lib.resolve("demo"), config_lib.resolve("paper")
    assert paper.ingest.image_size == 256 and demo.ingest.image_size == 64
    # keys a preset does not name keep the dataclass default
    assert paper.ingest.min_age_days == config_lib.IngestConfig().min_age_days
    for name in config_lib.PRESETS:
        overrides = config_lib.load_preset(name)
        for section, values in overrides.items():
            if not section.startswith("_"):
                assert set(values) <= set(config_lib.to_dict(getattr(config_lib.Config(), section)))


@pytest.mark.parametrize("pair, expected", [
    ("ingest.image_size=128", ("ingest", "image_size", 128)),
    ("ingest.test_ratio=0.25", ("ingest", "test_ratio", 0.25)),
    ("ingest.filter_age=false", ("ingest", "filter_age", False)),
    ("ingest.filter_caption=ON", ("ingest", "filter_caption", True)),
    ("synth.num_posts=1_000", ("synth", "num_posts", 1000)),
    ("ingest.runner=DirectRunner", ("ingest", "runner", "DirectRunner")),
])
def test_set_converts_types(pair, expected):
    section, key, value = expected
    cfg = config_lib.resolve(sets=[pair])
    assert getattr(getattr(cfg, section), key) == value
    assert type(getattr(getattr(cfg, section), key)) is type(value)


def test_set_without_section_uses_the_commands_section():
    assert config_lib.resolve(sets=["image_size=96"], default_section="ingest").ingest.image_size == 96
    with pytest.raises(ConfigError, match="needs a section"):
        config_lib.resolve(sets=["image_size=96"])


@pytest.mark.parametrize("pair, named", [
    ("ingest.imge_size=3", "ingest.imge_size"),
    ("nosuch.key=1", "nosuch"),
    ("ingest.image_size=big", "ingest.image_size"),
    ("ingest.image_size=-4", "ingest.image_size"),
    ("ingest.filter_age=maybe", "ingest.filter_age"),
    ("ingest.test_ratio=1.5", "ingest.test_ratio"),
    ("synth.broken_share=x", "synth.broken_share"),
])
def test_bad_keys_and_values_name_the_key(pair, named):
    with pytest.raises(ConfigError) as info:
        config_lib.resolve(sets=[pair])
    assert named in str(info.value)


def test_unknown_key_suggests_and_lists_allowed_keys():
    with pytest.raises(ConfigError) as info:
        config_lib.resolve(sets=["ingest.imge_size=3"])
    assert "did you mean 'ingest.image_size'" in str(info.value)
    assert "min_age_days" in str(info.value)


@pytest.mark.parametrize("old,new", sorted(config_lib.RENAMED.items()))
def test_a_renamed_key_is_refused_naming_its_new_name(old, new, tmp_path):
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        config_lib.resolve(sets=[f"{old}=2"])
    preset = tmp_path / "old.json"
    section, key = old.split(".")
    preset.write_text(json.dumps({section: {key: 2}}))
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        config_lib.resolve(str(preset))
    # the new name holds the value the old one did
    section, key = new.split(".")
    assert getattr(getattr(config_lib.resolve(sets=[f"{new}=2"]), section), key) == 2


def test_bool_rejects_non_bools_and_int_rejects_floats():
    with pytest.raises(ConfigError, match="true or false"):
        config_lib.resolve(sets=["ingest.dedupe_images=2"])
    with pytest.raises(ConfigError, match="not an integer"):
        config_lib.resolve(sets=["ingest.image_size=64.5"])


def test_preset_file_with_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"ingest": {"image_size": 32, "colour": "red"}}))
    with pytest.raises(ConfigError) as info:
        config_lib.resolve(str(path))
    assert "mine.json" in str(info.value) and "ingest.colour" in str(info.value)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config_lib.resolve("nope")


def test_set_wins_over_preset():
    assert config_lib.resolve("paper", ["ingest.image_size=128"]).ingest.image_size == 128


def test_write_resolved_roundtrip(tmp_path):
    cfg = config_lib.resolve("demo", ["ingest.min_age_days=7"]).ingest
    path = config_lib.write_resolved(cfg, str(tmp_path / "out"))
    data = json.loads(open(path).read())
    assert data["min_age_days"] == 7 and data == config_lib.to_dict(cfg)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pop_tf", *args], capture_output=True, text=True, timeout=120)


def test_cli_dry_run_prints_resolved_config_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    result = _cli("ingest", "--input", "x", "--output", str(out), "--preset", "paper",
                  "--set", "min_age_days=10", "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["image_size"] == 256 and printed["min_age_days"] == 10 and printed["output"] == str(out)
    assert not out.exists()


def test_cli_unknown_key_is_one_sentence_and_exit_2(tmp_path):
    result = _cli("synth", "--output", str(tmp_path / "d"), "--set", "synth.num_post=3")
    assert result.returncode == 2
    assert "synth.num_post" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_cli_unknown_beam_option_is_named(tmp_path):
    result = _cli("ingest", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                  "--direct_num_worker=2")
    assert result.returncode == 2
    assert "--direct_num_worker" in result.stderr and "--direct_num_workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_entry_point_names_a_missing_input_in_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pop_tf.train", "translator", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "score") in message and "pop-tf score" in message
    assert not (tmp_path / "train_translator").exists()  # nothing written for a run that could not start


