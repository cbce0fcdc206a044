"""`pop_tf.contracts`: the one table of where stages write in a work folder and what they read."""

import dataclasses
import json
import os

from pop_tf import config as config_lib
from pop_tf import contracts, pipeline, train
from pop_tf import paths as paths_lib
from pop_tf.contracts import DATASET, WORKDIR
from pop_tf import ablation
from pop_tf.stages import evaluate


def _closure(stage: str) -> set:
    """The stages (and DATASET) a stage's fingerprint covers, directly or through earlier stages."""
    seen, todo = set(), list(contracts.BY_NAME[stage].inputs)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if name in contracts.BY_NAME:
                todo += contracts.BY_NAME[name].inputs
    # synth writes the dataset when there is no --dataset
    return seen | ({"synth"} if DATASET in seen else set())


def test_the_table_is_consistent():
    names = [c.name for c in contracts.CONTRACTS]
    assert len(names) == len(set(names))
    folders = [os.path.normpath(c.folder) for c in contracts.CONTRACTS]
    assert len(folders) == len(set(folders)), "two stages write the same folder"
    assert all(not os.path.isabs(f) and not f.startswith("..") and os.sep not in f for f in folders)
    assert pipeline.STAGE_ORDER == contracts.STAGE_ORDER
    order = contracts.STAGE_ORDER
    for contract in contracts.CONTRACTS:
        earlier = set(order[:order.index(contract.name)]) if contract.pipeline else set(order)
        fields = {f.name for f in dataclasses.fields(getattr(config_lib.Config(), contract.section))}
        keys = set(contract.reads) | ({contract.output} if contract.output else set())
        assert keys <= fields, f"{contract.name}: keys its config section lacks: {keys - fields}"
        assert set(contract.keep_given) <= keys
        for key, source in contract.reads.items():
            # Each input is produced by an earlier stage (or is the dataset / the work folder) ...
            assert source.stage in earlier | {DATASET, WORKDIR}, f"{contract.name}.{key} reads {source.stage}"
            # ... and a change there reruns the stage.
            if contract.pipeline and source.stage != WORKDIR:
                assert source.stage in _closure(contract.name), f"{contract.name}.{key}: {source.stage} unhashed"
        for name in contract.inputs:
            assert name == DATASET or name in earlier, f"{contract.name} is fingerprinted on later {name}"
        for stage in contract.combines:
            assert not contract.pipeline and stage in order
        # pop_tf.paths checks the keys the table fills: inputs apart from outputs.
        if contract.name in paths_lib.STAGE_PATHS:
            reads, writes = paths_lib.STAGE_PATHS[contract.name]
            assert set(contract.reads) <= set(reads) and contract.output in writes


def test_fingerprint_inputs_are_unchanged():
    # Their order is hashed into every _COMPLETE marker: changing it reruns existing work folders.
    assert pipeline.INPUTS == {
        "synth": (),
        "ingest": ("dataset",),
        "pairs": ("ingest",),
        "train_ranker": ("pairs", "ingest", "dataset"),
        "score": ("ingest", "train_ranker"),
        "cluster": ("ingest",),
        "train_translator": ("score", "cluster"),
        "evaluate": ("score", "cluster", "train_ranker", "train_translator"),
        "export": ("train_ranker", "cluster", "train_translator"),
    }


def test_a_workdir_resolves_to_the_same_paths_as_before(tmp_path):
    w, d = str(tmp_path / "w"), str(tmp_path / "d")
    j = os.path.join
    assert contracts.paths("synth", w) == {"output": j(w, "synth")}
    assert contracts.paths("ingest", w, d) == {"input": d, "output": j(w, "ingest")}
    assert contracts.paths("ingest", w) == {"input": j(w, "synth"), "output": j(w, "ingest")}
    assert contracts.paths("pairs", w) == {"input": j(w, "ingest"), "output": j(w, "pairs")}
    assert contracts.paths("train_ranker", w, d) == {"input": j(w, "pairs"), "images": j(w, "ingest"), "truth": "",
                                                     "output": j(w, "train_ranker")}
    assert contracts.paths("score", w) == {"input": j(w, "ingest"), "model": j(w, "train_ranker", "saved_model"),
                                           "output": j(w, "score")}
    assert contracts.paths("cluster", w) == {"input": j(w, "ingest"), "output": j(w, "cluster")}
    assert contracts.paths("train_translator", w) == {"input": j(w, "score"), "clusters": j(w, "cluster"),
                                                      "output": j(w, "train_translator")}
    assert contracts.paths("evaluate", w) == {
        "input": j(w, "score"), "ranker": j(w, "train_ranker", "saved_model"), "translator": "",
        "pix2pix_variants": [], "clusters": j(w, "cluster"), "truth": "", "output": j(w, "evaluate")}
    assert contracts.paths("export", w) == {"workdir": w}
    assert contracts.folder(w, "export") == j(w, "export")
    assert contracts.paths("ablation", w) == {"output": j(w, "ablation")}

    # What the earlier stages left decides the optional paths.
    os.makedirs(j(w, "train_translator", "saved_model"))
    open(j(w, "train_translator", "generator.weights.h5"), "w").close()
    os.makedirs(j(w, "synth"))
    open(j(w, "synth", "truth.jsonl"), "w").close()
    found = contracts.paths("evaluate", w)
    assert found["translator"] == j(w, "train_translator", "saved_model")
    assert found["pix2pix_variants"] == [j(w, "train_translator")]
    assert found["truth"] == j(w, "synth", "truth.jsonl")
    assert contracts.inputs("train_ranker", w)["truth"] == j(w, "synth", "truth.jsonl")
    assert contracts.inputs("train_ranker", w, d)["truth"] == ""  # the given dataset's, which has none


def test_the_pipeline_keeps_given_paths_only_where_the_table_says(tmp_path):
    w, d = str(tmp_path / "w"), str(tmp_path / "d")
    os.makedirs(d)
    open(os.path.join(d, "truth.jsonl"), "w").close()
    config = config_lib.resolve(None, ["ingest.input=/mine", "ingest.output=/mine2", "evaluate.output=/e",
                                       "train_ranker.truth=/t.jsonl"])
    assert pipeline._configure("ingest", config, w, d).input == d
    assert config.ingest.output == os.path.join(w, "ingest")
    assert pipeline._configure("train_ranker", config, w, d).truth == "/t.jsonl"
    section = pipeline._configure("evaluate", config, w, d)
    assert section.output == "/e" and section.truth == os.path.join(d, "truth.jsonl")
    assert section.input == os.path.join(w, "score")
    assert pipeline._configure("export", config, w, d).workdir == w
    assert "translator" in config.export.models  # the default model is dmit


def test_the_workdir_entry_points_take_their_paths_from_the_table(tmp_path, capsys):
    w = str(tmp_path / "w")
    for model, section in (("ranker", "train_ranker"), ("clusterer", "cluster"), ("translator", "train_translator")):
        assert train.main([model, "--workdir", w, "--dry-run"]) == 0
        resolved = json.loads(capsys.readouterr().out)
        assert {k: resolved[k] for k in contracts.paths(section, w)} == contracts.paths(section, w)
    assert evaluate.main(["--workdir", w, "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert {k: resolved[k] for k in contracts.paths("evaluate", w)} == contracts.paths("evaluate", w)
    assert ablation.main(["--workdir", w, "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["ablation"]["output"] == os.path.join(w, "ablation")
    assert resolved["train_translator"]["input"] == os.path.join(w, "score")
    assert resolved["train_translator"]["output"] == ""  # set per variant
    assert resolved["evaluate"]["ranker"] == os.path.join(w, "train_ranker", "saved_model")
    assert resolved["evaluate"]["output"] == ""


def test_every_pipeline_stage_is_a_pop_tf_command_and_trainers_take_a_workdir(tmp_path, capsys):
    from pop_tf import cli
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(contracts.STAGE_ORDER) <= set(commands)
    w = str(tmp_path / "w")
    for stage in ("train_ranker", "train_translator"):
        assert cli.main([stage, "--workdir", w, "--dry-run"]) == 0
        resolved = json.loads(capsys.readouterr().out)
        assert {k: resolved[k] for k in contracts.paths(stage, w)} == contracts.paths(stage, w)
        # The command's own flag and --set both override the work folder's places.
        assert cli.main([stage, "--workdir", w, "--output", str(tmp_path / "o"),
                         "--set", f"input={tmp_path / 'i'}", "--dry-run"]) == 0
        resolved = json.loads(capsys.readouterr().out)
        assert (resolved["output"], resolved["input"]) == (str(tmp_path / "o"), str(tmp_path / "i"))
    # Input and output folders that overlap are refused before any training starts.
    assert cli.main(["train_ranker", "--workdir", w, "--output", os.path.join(w, "pairs")]) != 0
    assert "train_ranker.output" in capsys.readouterr().err


def test_the_cli_shows_progress_at_info_and_quiet_hides_it(tmp_path):
    import subprocess
    import sys

    def synth_stage(*flags):
        return subprocess.run([sys.executable, "-m", "pop_tf", *flags, "run", "--workdir", str(tmp_path / "w"),
                               "--until", "synth", "--set", "synth.num_posts=20"],
                              capture_output=True, text=True, timeout=300)

    shown = synth_stage()
    assert shown.returncode == 0 and "[synth] running" in shown.stderr and "synth: 20 posts" in shown.stderr
    quiet = synth_stage("--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
