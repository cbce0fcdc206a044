"""Red team, classes 6b and 8: config values that switch checks off, sizes without limits, runner
names and presets that crashed.

Every variant is generated from the dataclasses themselves (each int and float field declares its
`Range` as field metadata), so a field added later is covered without touching this file:
NaN and ±inf for every float field, values just outside and exactly at the edges of every
bounded field, through `--set` strings and JSON presets alike; runner names from Beam's own list
and mangled copies of them; and preset files of random bytes, mutated presets, deep nesting and
other shapes. Each attempt ends in a config value that is inside its range, or in a ConfigError
(a UsageError: exit status 2 on the command line) whose sentence names the key and the range.
"""

import dataclasses
import json
import math
import random
import subprocess
import sys
import typing
from importlib import resources

import pytest

from pop_tf import config as config_lib
from pop_tf.beam import options as beam_options
from pop_tf.config import ConfigError
from tests.conftest import TINY


def _numeric_fields():
    """[(dotted key, Range, is_int)] of every int and float field of every section."""
    found = []
    for key, (field, tp) in config_lib.section_fields().items():
        args = set(typing.get_args(tp)) | {tp}
        if bool in args or not args & {int, float}:
            continue
        found.append((key, field.metadata.get("range"), int in args and float not in args))
    return found


FIELDS = _numeric_fields()
FLOAT_KEYS = [key for key, _, is_int in FIELDS if not is_int]
INT_KEYS = [key for key, _, is_int in FIELDS if is_int]


def _refusal(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def _via_preset(tmp_path, key, value, name="preset.json"):
    section, field = key.split(".", 1)
    path = tmp_path / name
    path.write_text(json.dumps({section: {field: value}}))  # NaN / Infinity as json.dumps writes them
    return config_lib.resolve(str(path))


def _value(config, key):
    section, field = key.split(".", 1)
    return getattr(getattr(config, section), field)


def test_every_numeric_field_declares_its_range_and_its_default_is_inside():
    assert len(FIELDS) > 100
    for key, bounds, is_int in FIELDS:
        assert isinstance(bounds, config_lib.Range), f"{key} declares no range (use config.bounded)"
        default = _value(config_lib.Config(), key)
        config_lib.validate_value(key, default)  # a default outside its own range would be a trap


def test_presets_and_the_values_tests_use_stay_valid():
    # The ranges must admit what the presets and the tests set: resolving raises otherwise.
    assert config_lib.resolve("demo").train_translator.image_size == 32
    assert config_lib.resolve("paper").train_translator.image_size == 256
    assert isinstance(config_lib.resolve(None, TINY), config_lib.Config)


# --- Class 6b: NaN and infinities ------------------------------------------------------------

NONFINITE_STRINGS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e999", "-1e999", "1_0e999"]


def test_nonfinite_floats_are_refused_for_every_float_field(tmp_path):
    """Every float field × every spelling of NaN/±inf, as --set strings and as JSON preset values."""
    attempts = 0
    for key in FLOAT_KEYS:
        for text in NONFINITE_STRINGS:
            message = _refusal(lambda: config_lib.resolve(None, [f"{key}={text}"]))
            assert f"config key '{key}'" in message and "not a finite number" in message, message
            attempts += 1
        for value in (math.nan, math.inf, -math.inf, 10**400):
            message = _refusal(lambda: _via_preset(tmp_path, key, value))
            assert f"config key '{key}'" in message and "preset.json" in message, message
            assert "not a finite number" in message or "not a number" in message, message
            attempts += 1
        with pytest.raises(ConfigError, match="not a finite number"):  # a config built in code
            config_lib.validate_value(key, math.nan)
    assert attempts == len(FLOAT_KEYS) * (len(NONFINITE_STRINGS) + 4)


def test_nonfinite_values_are_not_integers_either(tmp_path):
    for key in INT_KEYS:
        for text in ("nan", "inf", "-inf", "1e999"):
            assert f"config key '{key}'" in _refusal(lambda: config_lib.resolve(None, [f"{key}={text}"]))
        for value in (math.nan, math.inf, -math.inf):
            message = _refusal(lambda: _via_preset(tmp_path, key, value))
            assert f"config key '{key}'" in message and "not an integer" in message, message


def test_the_reported_cases_now_fail():
    message = _refusal(lambda: config_lib.resolve(None, ["ingest.max_aspect_ratio=nan"]))
    assert message == "config key 'ingest.max_aspect_ratio': nan is not a finite number; use a finite number >= 1"
    assert "pairs.window_days" in _refusal(lambda: config_lib.resolve(None, ["pairs.window_days=nan"]))


# --- Class 8: bounds of every size and count ---------------------------------------------------

def _probes(bounds: config_lib.Range, is_int: bool):
    """[(value, admitted)] at and just beyond each declared bound."""
    step = bounds.multiple_of or 1
    probes = []
    for edge, is_open, direction in ((bounds.low, bounds.low_open, -1), (bounds.high, bounds.high_open, +1)):
        if edge is None:
            continue
        if is_int:
            probes.append((edge, not is_open))
            probes.append((edge + direction * step, False))
            probes.append((edge - direction * step, True))
        else:
            tiny = max(abs(edge) * 1e-9, 1e-12)
            probes.append((float(edge), not is_open))
            probes.append((edge + direction * tiny, False))
            probes.append((edge - direction * tiny, True))
    if bounds.high is None and not is_int:
        probes.append((1e300, True))
    if bounds.multiple_of:
        probes.append((bounds.low + 1, False))  # inside the bounds, not a multiple
    probes += [(value, True) for value in bounds.also]
    # A value just beyond one bound may be an `also` value (0 for "automatic").
    return [(value, admitted or value in bounds.also) for value, admitted in probes]


def _text(value, is_int):
    return str(value) if is_int else repr(float(value))


def test_every_bounded_field_refuses_values_beyond_its_range_and_takes_its_edges(tmp_path):
    attempts = {"admitted": 0, "refused": 0}
    for key, bounds, is_int in FIELDS:
        allowed = bounds.describe(is_int)
        for value, admitted in _probes(bounds, is_int):
            for way, call in (("set", lambda: config_lib.resolve(None, [f"{key}={_text(value, is_int)}"])),
                              ("preset", lambda: _via_preset(tmp_path, key, value)),
                              ("code", lambda: config_lib.validate_value(key, value))):
                if admitted:
                    result = call()
                    if way != "code":
                        assert _value(result, key) == value, (key, value, way)
                    attempts["admitted"] += 1
                else:
                    message = _refusal(call)
                    assert f"config key '{key}'" in message and allowed in message, (key, value, way, message)
                    attempts["refused"] += 1
    assert attempts["refused"] > 3 * 150 and attempts["admitted"] > 3 * 200, attempts


def test_the_reported_sizes_fail_with_the_range():
    for value in (1, 100000):
        message = _refusal(lambda: config_lib.resolve(None, [f"ingest.image_size={value}"]))
        assert message == f"config key 'ingest.image_size': {value} is out of range; use an integer in [16, 1024]"
    for key in ("synth.image_size", "train_ranker.image_size", "train_translator.image_size",
                "cluster.feature_size", "evaluate.ndb_image_size", "train_ranker.batch_size"):
        assert key in _refusal(lambda: config_lib.resolve(None, [f"{key}=100000"]))


def test_random_numbers_are_admitted_exactly_when_inside_the_range():
    rng = random.Random(8)
    attempts = 0
    for key, bounds, is_int in FIELDS:
        for _ in range(6):
            value = rng.choice([rng.randint(-2**40, 2**40), rng.randint(-300, 5000)]) if is_int else \
                rng.choice([rng.uniform(-2.0, 2.0), rng.uniform(-1e6, 1e6), 10 ** rng.uniform(-12, 12)])
            if bounds.admits(value):
                assert _value(config_lib.resolve(None, [f"{key}={_text(value, is_int)}"]), key) == value
            else:
                assert key in _refusal(lambda: config_lib.resolve(None, [f"{key}={_text(value, is_int)}"]))
            attempts += 1
    assert attempts == 6 * len(FIELDS)


# --- Class 8: runner names ----------------------------------------------------------------------

def _known_runner_names():
    from apache_beam.options.pipeline_options import StandardOptions

    return [path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS]


def test_runner_names_are_checked_against_the_runners_beam_offers():
    names = _known_runner_names()
    attempts = {"taken": 0, "refused": 0}
    for section in ("ingest", "pairs"):
        key = f"{section}.runner"
        for name in names:
            for spelling in (name, name.lower(), name.upper(), name[:-len("Runner")]):
                problem = beam_options.runner_problem(spelling)
                if problem is None:
                    assert _value(config_lib.resolve(None, [f"{key}={spelling}"]), key) == spelling
                    attempts["taken"] += 1
                else:  # a known runner whose extra is missing here (InteractiveRunner needs pandas)
                    assert "cannot be loaded here" in problem, problem
                    assert key in _refusal(lambda: config_lib.resolve(None, [f"{key}={spelling}"]))
                    attempts["refused"] += 1
            for i in range(len(name)):  # every one-letter deletion: a typo, never a runner
                typo = name[:i] + name[i + 1:]
                if typo.lower() in {n.lower() for n in names} | {n.lower()[:-6] for n in names}:
                    continue
                message = _refusal(lambda: config_lib.resolve(None, [f"{key}={typo}"]))
                assert f"config key '{key}'" in message and "is not a Beam runner" in message, message
                assert "FnApiRunner" in message
                attempts["refused"] += 1
        for bad in ("", " ", "no.such.module.Runner", "os.path", "json.JSONDecoder", "apache_beam.NoSuchRunner",
                    "x" * 5000):
            message = _refusal(lambda: config_lib.resolve(None, [f"{key}={bad}"]))
            assert f"config key '{key}'" in message, message
            attempts["refused"] += 1
    assert attempts["taken"] > 80 and attempts["refused"] > 300, attempts


def test_a_runner_given_to_beam_or_built_in_code_is_checked_too():
    with pytest.raises(beam_options.BeamOptionError, match="--runner: 'Nope' is not a Beam runner"):
        beam_options.pipeline_options(["--runner=Nope"], "FnApiRunner")
    with pytest.raises(beam_options.BeamOptionError, match="'DirectRuner' is not a Beam runner .did you mean Dir"):
        beam_options.pipeline_options(["--runner", "DirectRuner"], "FnApiRunner")
    with pytest.raises(beam_options.BeamOptionError, match="runner setting: 'Bogus'"):
        beam_options.pipeline_options([], "Bogus")
    assert beam_options.pipeline_options(["--runner=direct"], "Bogus").get_all_options()["runner"] == "direct"
    assert beam_options.pipeline_options([], "FnApiRunner").get_all_options()["runner"] == "FnApiRunner"


# --- Class 8: preset files ----------------------------------------------------------------------

def _preset_outcome(path):
    """"ok" when the file resolves, else the ConfigError's sentence (any other exception fails)."""
    try:
        config_lib.resolve(str(path))
        return "ok"
    except ConfigError as e:
        message = str(e)
        assert str(path) in message and "\n" not in message and len(message) < 1200, message
        return message


def test_random_bytes_as_a_preset_are_a_sentence(tmp_path):
    rng = random.Random(6)
    kinds = {}
    for i in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 64, 512, 4096])))
        if i % 3 == 0:  # ASCII noise too, so that the JSON parser (not only the decoder) is reached
            data = bytes(b % 95 + 32 for b in data)
        path = tmp_path / f"random{i}.json"
        path.write_bytes(data)
        outcome = _preset_outcome(path)
        kind = "ok" if outcome == "ok" else outcome.split(": ", 1)[1].split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    assert "ok" not in kinds and sum(kinds.values()) == 300, kinds
    assert kinds.get("not UTF-8 text", 0) > 100 and kinds.get("not valid JSON", 0) > 50, kinds


def test_mutated_presets_resolve_or_name_the_problem(tmp_path):
    """Byte flips, deletions and insertions in the demo preset: a valid result or a sentence."""
    demo = resources.files("pop_tf.presets").joinpath("demo.json").read_bytes()
    rng = random.Random(7)
    counts = {"ok": 0, "refused": 0}
    for i in range(300):
        data = bytearray(demo)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            kind = rng.choice(["flip", "delete", "insert"])
            if kind == "flip":
                data[at] = rng.randrange(256)
            elif kind == "delete":
                del data[at]
            else:
                data.insert(at, rng.choice(b'{}[]",:0123456789.eE-+ \\\xff\xc3NaInfity'))
        path = tmp_path / f"mutated{i}.json"
        path.write_bytes(bytes(data))
        counts["ok" if _preset_outcome(path) == "ok" else "refused"] += 1
    assert counts["refused"] > 150, counts


@pytest.mark.parametrize("name, data, expected", [
    ("latin1", '{"ingest": {"runner": "Dir\xe9ct"}}'.encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 26)"),
    ("utf16", '{"ingest": {}}'.encode("utf-16"), "not UTF-8 text"),
    ("deep_arrays", b"[" * 200_000, "nested too deeply"),
    ("deep_objects", b'{"a":' * 200_000, "nested too deeply"),
    ("deep_value", b'{"ingest": {"image_size": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}", "nested too deeply"),
    ("deep_but_parsed", b'{"ingest": {"image_size": ' + b"[" * 400 + b"]" * 400 + b"}}",
     "config key 'ingest.image_size': [[[...]]] is not an integer"),
    ("top_array", b'[{"ingest": {}}]', "the top level must be an object of sections"),
    ("top_string", b'"ingest"', "got a string"),
    ("top_number", b"64", "got a number"),
    ("top_null", b"null", "got null"),
    ("empty", b"", "not valid JSON (Expecting value at line 1 column 1)"),
    ("section_not_object", b'{"ingest": [1, 2]}', "section 'ingest' must be an object of keys, got an array"),
    ("duplicate_key", b'{"ingest": {"image_size": 32, "image_size": 100000}}', "key 'image_size' appears twice"),
    ("huge_int", b'{"ingest": {"image_size": ' + b"9" * 5000 + b"}}", "not a usable JSON preset"),
    ("huge_string", b'{"ingest": {"runner": "' + b"x" * 100_000 + b'"}}', "is not a Beam runner"),
    ("too_big", b'{"_": "' + b" " * (1024 * 1024) + b'"}', "larger than 1,048,576 bytes"),
    ("nan_limit", b'{"ingest": {"max_aspect_ratio": NaN}}', "config key 'ingest.max_aspect_ratio': nan"),
])
def test_bad_preset_files_are_one_sentence(tmp_path, name, data, expected):
    path = tmp_path / f"{name}.json"
    path.write_bytes(data)
    message = _refusal(lambda: config_lib.resolve(str(path)))
    assert expected in message and str(path) in message, message


def test_a_byte_order_mark_is_fine_and_a_folder_is_no_preset(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"ingest": {"image_size": 32}}).encode())
    assert config_lib.resolve(str(path)).ingest.image_size == 32
    assert "unknown preset" in _refusal(lambda: config_lib.resolve(str(tmp_path)))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pop_tf", *args], capture_output=True, text=True, timeout=120)


def test_the_command_line_says_one_sentence_and_exits_2(tmp_path):
    preset = tmp_path / "latin1.json"
    preset.write_bytes('{"synth": {"num_posts": "\xe9"}}'.encode("latin-1"))
    for args, named in (
            (["synth", "--output", str(tmp_path / "a"), "--preset", str(preset)], "not UTF-8 text"),
            (["ingest", "--input", "x", "--output", str(tmp_path / "b"), "--set", "runner=Nope"],
             "config key 'ingest.runner'"),
            (["ingest", "--input", "x", "--output", str(tmp_path / "c"), "--set", "image_size=100000", "--dry-run"],
             "config key 'ingest.image_size': 100000 is out of range; use an integer in [16, 1024]"),
            (["pairs", "--input", "x", "--output", str(tmp_path / "d"), "--set", "window_days=nan", "--dry-run"],
             "config key 'pairs.window_days': nan is not a finite number")):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not any((tmp_path / d).exists() for d in "abcd")


def test_range_descriptions_read_as_sentences():
    describe = config_lib.Range
    assert describe(16, 1024).describe(True) == "an integer in [16, 1024]"
    assert describe(0.0, 1.0, high_open=True).describe(False) == "a finite number in [0, 1)"
    assert describe(0.0, low_open=True).describe(False) == "a finite number > 0"
    assert describe(32, 1024, multiple_of=32, why="stride").describe(True) == "a multiple of 32 in [32, 1024] (stride)"
    assert describe(16, 1024, also=(0,)).describe(True) == "0 or an integer in [16, 1024]"
    assert describe().describe(False) == "a finite number"
    assert dataclasses.fields(config_lib.IngestConfig)  # the helper keeps them dataclass fields
