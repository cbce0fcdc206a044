"""Outputs that overlap inputs are refused before anything is written, and pop_tf removes or
replaces only files it recorded as its own (issue 17, data loss).

The cases are generated: every stage entry point (Python API or command line, by its input and
output options) meets every way of naming two overlapping paths — the same folder, the output
inside the input, the input inside the output, a symlink, a relative path with `..`, trailing
slashes, a symlink followed by `..`. Each call must fail with one sentence naming both options,
and every byte, name and link under the test folder must be as it was.
"""

import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from pop_tf import cli, paths, pipeline, serving, synth, train, translate
from pop_tf import config as config_lib
from pop_tf.stages import cluster, export, ingest, pairs, score, staging
from tests.conftest import tiny_config

# What a user's folder might hold: names a stage writes or removes (shards, stats.json,
# config.json, a SavedModel) beside a dataset's own files.
USER_FILES = {
    "metadata.jsonl": b'{"post_id": "mine", "image": "images/p000001.png", "likes": 3}\n',
    "images/p000001.png": b"\x89PNG not really",
    "train-00000-of-00001.tfrecord.gz": b"the user's own shard",
    "test-00000-of-00001.tfrecord.gz": b"another",
    "train_pairs-00000-of-00001.tfrecord.gz": b"pairs?",
    "stats.json": b'{"mine": true}\n',
    "config.json": b'{"mine": true}\n',
    "scores.csv": b"post_id,score\nmine,1\n",
    "rejects.jsonl": b"{}\n",
    "saved_model/saved_model.pb": b"not pop_tf's",
    "inner/notes.txt": b"keep me",
    "inner/stats.json": b"{}",
}


def _fill(folder):
    for name, data in USER_FILES.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _snapshot(root) -> dict:
    """{relative path: what is there} for everything under `root`, links not followed."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                seen[key] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                seen[key] = ("dir",)
            else:
                with open(path, "rb") as f:
                    seen[key] = ("file", hashlib.sha256(f.read()).hexdigest())
    return seen


# ----------------------------------------------------------------------------- the variants
# Each takes the user's folder `data` (which exists and holds USER_FILES) and returns
# (input, output): two names for overlapping places. Relative paths are relative to data's parent,
# the working directory of the call.


def _same(data):
    return str(data), str(data)


def _output_inside(data):
    return str(data), str(data / "out")


def _input_inside(data):
    return str(data / "inner"), str(data)


def _symlink(data):
    os.symlink(data, data.parent / "link")
    return str(data), str(data.parent / "link")


def _relative_dotdot(data):
    return data.name, f"{data.name}/not-there/../"


def _trailing_slashes(data):
    return f"{data}/", f"{data}//"


def _symlink_then_dotdot(data):
    # `jump/..` is data to the OS (the link is followed first), but data's parent to os.path.abspath.
    os.symlink(data / "inner", data.parent / "jump")
    return str(data), str(data.parent / "jump" / "..")


VARIANTS = [_same, _output_inside, _input_inside, _symlink, _relative_dotdot, _trailing_slashes,
            _symlink_then_dotdot]


@pytest.fixture
def data(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    _fill(folder)
    monkeypatch.chdir(tmp_path)
    return folder


# ------------------------------------------------------------------------- the entry points
# Each takes (input, output, tmp_path, capsys) and returns the refusal's message; the options it
# must name come beside it in ENTRIES.


def _refused(call) -> str:
    with pytest.raises(paths.PathOverlapError) as error:
        call()
    return str(error.value)


def _cli_refused(code: int, capsys, program: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), err
    return lines[0]


def _ingest(inp, out, root, capsys):
    return _refused(lambda: ingest.run(config_lib.IngestConfig(input=inp, output=out)))


def _ingest_cli(inp, out, root, capsys):
    return _cli_refused(cli.main(["ingest", "--input", inp, "--output", out]), capsys, "pop-tf ingest")


def _pairs(inp, out, root, capsys):
    return _refused(lambda: pairs.run(config_lib.PairsConfig(input=inp, output=out)))


def _score_input(inp, out, root, capsys):
    return _refused(lambda: score.run(config_lib.ScoreConfig(input=inp, model=str(root / "model"), output=out)))


def _score_model(inp, out, root, capsys):
    return _refused(lambda: score.run(config_lib.ScoreConfig(input=str(root / "ingest"), model=inp, output=out)))


def _cluster(inp, out, root, capsys):
    return _refused(lambda: cluster.run(config_lib.ClusterConfig(input=inp, output=out)))


def _train(model, section, key):
    def call(inp, out, root, capsys):
        code = train.main([model, "--workdir", str(root / "w"), "--set", f"{section}.{key}={inp}",
                           "--set", f"{section}.output={out}"])
        return _cli_refused(code, capsys, f"python -m pop_tf.train {model}")
    return call


def _ranker_logdir(inp, out, root, capsys):
    code = train.main(["ranker", "--workdir", str(root / "w"), "--set", f"train_ranker.input={inp}",
                       "--set", f"train_ranker.logdir={out}"])
    return _cli_refused(code, capsys, "python -m pop_tf.train ranker")


def _evaluate_in_run(inp, out, root, capsys):
    code = cli.main(["run", "--workdir", str(root / "w"), "--set", f"evaluate.input={inp}",
                     "--set", f"evaluate.output={out}"])
    return _cli_refused(code, capsys, "pop-tf run")


def _evaluate_variants_in_run(inp, out, root, capsys):
    code = cli.main(["run", "--workdir", str(root / "w"), "--set", f"evaluate.pix2pix_variants={inp}",
                     "--set", f"evaluate.output={out}"])
    return _cli_refused(code, capsys, "pop-tf run")


def _run_dataset(inp, out, root, capsys):
    return _cli_refused(cli.main(["run", "--workdir", out, "--dataset", inp]), capsys, "pop-tf run")


def _run_export_dir(inp, out, root, capsys):
    code = cli.main(["run", "--workdir", str(root / "w"), "--dataset", inp, "--export-dir", out])
    return _cli_refused(code, capsys, "pop-tf run")


def _pipeline_api(inp, out, root, capsys):
    return _refused(lambda: pipeline.run(tiny_config(), workdir=out, dataset=inp))


ENTRIES = {
    "ingest": (_ingest, "ingest.input", "ingest.output"),
    "ingest_cli": (_ingest_cli, "ingest.input", "ingest.output"),
    "pairs": (_pairs, "pairs.input", "pairs.output"),
    "score_input": (_score_input, "score.input", "score.output"),
    "score_model": (_score_model, "score.model", "score.output"),
    "cluster": (_cluster, "cluster.input", "cluster.output"),
    "cluster_cli": (_train("clusterer", "cluster", "input"), "cluster.input", "cluster.output"),
    "train_ranker": (_train("ranker", "train_ranker", "input"), "train_ranker.input", "train_ranker.output"),
    "train_ranker_images": (_train("ranker", "train_ranker", "images"), "train_ranker.images",
                            "train_ranker.output"),
    "train_ranker_logdir": (_ranker_logdir, "train_ranker.input", "train_ranker.logdir"),
    "train_translator": (_train("translator", "train_translator", "input"), "train_translator.input",
                         "train_translator.output"),
    "train_translator_clusters": (_train("translator", "train_translator", "clusters"),
                                  "train_translator.clusters", "train_translator.output"),
    "evaluate_in_run": (_evaluate_in_run, "evaluate.input", "evaluate.output"),
    "evaluate_variants_in_run": (_evaluate_variants_in_run, "evaluate.pix2pix_variants", "evaluate.output"),
    "run_dataset_workdir": (_run_dataset, "--dataset", "--workdir"),
    "run_dataset_export_dir": (_run_export_dir, "--dataset", "--export-dir"),
    "pipeline_api": (_pipeline_api, "--dataset", "--workdir"),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__.strip("_"))
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_an_output_overlapping_an_input_is_refused_and_nothing_is_written(entry, variant, data, tmp_path, capsys):
    call, input_option, output_option = ENTRIES[entry]
    inp, out = variant(data)
    before = _snapshot(tmp_path)
    message = call(inp, out, tmp_path, capsys)
    assert input_option in message and output_option in message, message
    assert "outputs would be written among the inputs" in message
    assert _snapshot(tmp_path) == before  # no byte changed, nothing created (not even the work folder)


def test_overlap_follows_the_operating_system_not_the_spelling(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink(tmp_path / "a" / "b", tmp_path / "jump")
    # `jump/..` is `a` for the OS; spelt out it looks like tmp_path
    assert paths.overlap(str(tmp_path / "jump" / ".."), str(tmp_path / "a")) == "same"
    assert paths.overlap(str(tmp_path / "ab"), str(tmp_path / "a")) is None  # a prefix of the name only
    assert paths.overlap(str(tmp_path / "a" / "new" / "deeper"), str(tmp_path / "a")) == "output inside"
    assert paths.overlap("gs://bucket/data/", "gs://bucket/data/out") == "input inside"
    assert paths.overlap("gs://bucket/data", str(tmp_path / "a")) is None
    paths.check_apart({"x.output": str(tmp_path / "out")}, {"x.input": str(tmp_path / "a"), "x.none": ""})


# ------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__.strip("_"))
def test_an_export_folder_overlapping_the_work_folders_stages_is_refused(variant, tmp_path, capsys, monkeypatch):
    stage_folder = tmp_path / "w" / "train_ranker"  # the folder export reads the ranker from
    _fill(stage_folder)
    monkeypatch.chdir(stage_folder.parent)
    _, out = variant(stage_folder)
    before = _snapshot(tmp_path)
    code = cli.main(["export", "--workdir", str(tmp_path / "w"), "--export-dir", out])
    message = _cli_refused(code, capsys, "pop-tf export")
    assert "export.export_dir" in message and "export.workdir" in message, message
    assert _snapshot(tmp_path) == before


def test_an_export_folder_inside_the_work_folder_but_apart_from_its_stages_is_fine(tmp_path):
    # check_paths raises PathOverlapError on a refusal; returning None is the acceptance.
    assert export.check_paths(
        config_lib.ExportConfig(workdir=str(tmp_path / "w"), export_dir=str(tmp_path / "w" / "saved"))) is None
    with pytest.raises(paths.PathOverlapError):
        export.check_paths(config_lib.ExportConfig(workdir=str(tmp_path / "w"),
                                                   export_dir=str(tmp_path / "w" / "score")))


# --------------------------------------------------------------------------------- translate


def _png(path, size=(8, 8)):
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(path)


TRANSLATE_VARIANTS = {
    "same_file": lambda root: str(root / "a.png"),
    "symlink_to_it": lambda root: (os.symlink(root / "a.png", root / "grid.png"), str(root / "grid.png"))[1],
    "relative_dotdot": lambda root: "model/../a.png",
    "inside_the_model": lambda root: str(root / "model" / "grid.png"),
}


@pytest.mark.parametrize("variant", list(TRANSLATE_VARIANTS))
def test_translate_refuses_an_output_that_is_one_of_its_inputs(variant, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "model").mkdir()
    serving.write_model_card(str(tmp_path / "model"), "translator", {}, "")
    out = TRANSLATE_VARIANTS[variant](tmp_path)
    before = _snapshot(tmp_path)
    code = translate.main(["--model", "model", "--a", "a.png", "--b", "b.png", "--output", out])
    message = _cli_refused(code, capsys, "pop-tf translate")
    assert "--output" in message and ("--a" in message or "--model" in message), message
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------- synth and pipeline


@pytest.mark.parametrize("spelling", ["plain", "trailing_slash", "symlink"])
def test_synth_does_not_write_into_a_folder_it_did_not_make(spelling, data, tmp_path, capsys):
    out = {"plain": str(data), "trailing_slash": f"{data}/", "symlink": str(tmp_path / "link")}[spelling]
    if spelling == "symlink":
        os.symlink(data, tmp_path / "link")
    before = _snapshot(tmp_path)
    assert cli.main(["synth", "--output", out, "--num-posts", "20"]) == 1
    err = capsys.readouterr().err
    assert "synth did not write" in err and "holds 'inner'" in err and "more" in err
    assert _snapshot(tmp_path) == before


def test_synth_rewrites_its_own_folder(tmp_path):
    cfg = config_lib.SynthConfig(output=str(tmp_path / "s"), num_posts=30, image_size=32, num_users=3)
    synth.run(cfg)
    assert not synth.foreign_entries(cfg.output)
    cfg.num_posts = 20
    synth.run(cfg)  # a rerun into its own output is fine, and drops the images of posts 20..29
    assert len(os.listdir(tmp_path / "s" / "images")) <= 20


def test_from_does_not_remove_a_stage_folder_pop_tf_did_not_write(data, tmp_path):
    workdir = tmp_path / "w"
    _fill(workdir / "pairs")  # the user's own folder that happens to be called "pairs"
    before = _snapshot(tmp_path)
    with pytest.raises(pipeline.StageFolderError, match=f"{workdir / 'pairs'} holds files no pop_tf run wrote"):
        pipeline.run(tiny_config(), str(workdir), dataset=str(data), from_stage="ingest")
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------ install and staging


def _stage(folder, files: dict) -> str:
    staged = staging.make_staging(str(folder))
    for name, data in files.items():
        with open(os.path.join(staged, name), "wb") as f:
            f.write(data)
    return staged


def test_install_replaces_only_what_an_earlier_install_of_the_same_stage_recorded(tmp_path):
    out = tmp_path / "out"
    owned = dict(owned_prefixes=("train-",), owned_names=("stats.json",), owner="ingest")
    staging.install(_stage(out, {"train-0-of-2": b"a", "train-1-of-2": b"b", "stats.json": b"1"}), str(out), **owned)
    (out / "notes.txt").write_bytes(b"the user's")
    staging.install(_stage(out, {"train-0-of-1": b"c", "stats.json": b"2"}), str(out), **owned)
    assert sorted(os.listdir(out)) == sorted(["train-0-of-1", "stats.json", "notes.txt", staging.RECORD])
    assert (out / "stats.json").read_bytes() == b"2" and (out / "notes.txt").read_bytes() == b"the user's"
    assert staging.recorded_outputs(str(out)) == {"train-0-of-1": "ingest", "stats.json": "ingest"}


@pytest.mark.parametrize("intruder", ["train-mine.tfrecord.gz", "extra.json"])
def test_install_refuses_files_it_did_not_record_and_leaves_them(intruder, tmp_path):
    out = tmp_path / "out"
    owned = dict(owned_prefixes=("train-",), owned_names=("stats.json",), owner="ingest")
    staging.install(_stage(out, {"train-0-of-1": b"a", "stats.json": b"1"}), str(out), **owned)
    # put there afterwards: named like an output (train-*), or like a file the stage now writes
    (out / intruder).write_bytes(b"the user's")
    before = _snapshot(tmp_path)
    staged = _stage(out, {"train-0-of-1": b"b", "stats.json": b"2", "extra.json": b"new"})
    with pytest.raises(staging.OutputFolderError, match=f"already holds '{intruder}'.*nothing was replaced"):
        staging.install(staged, str(out), **owned)
    assert _snapshot(tmp_path) == before  # the staging folder went too


def test_install_keeps_the_outputs_of_another_stage_in_the_same_folder(tmp_path):
    out = tmp_path / "out"
    staging.install(_stage(out, {"config.json": b"score's"}), str(out), owned_names=("config.json",), owner="score")
    with pytest.raises(staging.OutputFolderError, match="'config.json'"):
        staging.install(_stage(out, {"config.json": b"evaluate's"}), str(out), owned_names=("config.json",))
    assert (out / "config.json").read_bytes() == b"score's"


def test_an_output_folder_an_older_pop_tf_wrote_is_adopted(tmp_path):
    out = tmp_path / "ingest"
    out.mkdir()
    (out / "train-0-of-3").write_bytes(b"old shard")  # written before installs kept a record
    (out / "config.json").write_text(json.dumps(config_lib.to_dict(config_lib.IngestConfig())))
    assert pipeline._made_by_pop_tf("ingest", str(out))  # its resolved config says whose it is
    staging.install(_stage(out, {"train-0-of-1": b"new", "config.json": b"{}"}), str(out),
                    owned_prefixes=("train-",), owned_names=("config.json",), owner="ingest")
    assert sorted(os.listdir(out)) == sorted(["config.json", "train-0-of-1", staging.RECORD])
    # a config.json of a few common keys is not pop_tf's
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"seed": 1, "output": "x"}')
    (mine / "train-0-of-3").write_bytes(b"the user's")
    assert not pipeline._made_by_pop_tf("ingest", str(mine))
    with pytest.raises(staging.OutputFolderError, match="'config.json', 'train-0-of-3'"):
        staging.install(_stage(mine, {"train-0-of-1": b"new"}), str(mine), owned_prefixes=("train-",),
                        owned_names=("config.json",), owner="ingest")


def test_staging_cleanup_removes_only_its_own_folders(tmp_path):
    (tmp_path / ".staging-notes").mkdir()
    (tmp_path / ".staging-0123456789ab").mkdir()  # a killed run's
    staging.make_staging(str(tmp_path))
    names = os.listdir(tmp_path)
    assert ".staging-notes" in names and ".staging-0123456789ab" not in names


def test_a_saved_model_folder_pop_tf_did_not_export_is_never_replaced(tmp_path):
    target = tmp_path / "saved_model"
    _fill(target)
    before = _snapshot(tmp_path)
    staged = tmp_path / ".export-x"
    (staged / "model").mkdir(parents=True)
    with pytest.raises(serving.ModelFolderError, match="is not a SavedModel pop_tf exported"):
        serving.install_staged(str(staged), str(target))
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith(".export-x")} == before


def _block_png(seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((48, 48), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_ingest_into_a_folder_holding_user_shards_refuses_and_keeps_them(tmp_path):
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    lines = []
    for i in range(3):
        (dataset / "images" / f"{i}.png").write_bytes(_block_png(i))
        lines.append(json.dumps({"post_id": f"p{i}", "image": f"images/{i}.png", "likes": i, "caption": "#x",
                                 "posted_at": "2023-01-01T00:00:00Z", "downloaded_at": "2023-03-01T00:00:00Z"}))
    (dataset / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    _fill(out)
    before = _snapshot(out)
    cfg = config_lib.IngestConfig(input=str(dataset), output=str(out), image_size=32)
    with pytest.raises(staging.OutputFolderError, match="nothing was replaced"):
        ingest.run(cfg)
    assert _snapshot(out) == before  # the staged outputs went too
    # into a folder of its own, a rerun replaces what the first run wrote
    cfg.output = str(tmp_path / "fresh")
    ingest.run(cfg)
    ingest.run(cfg)
    assert set(staging.recorded_outputs(cfg.output).values()) == {"ingest"}
