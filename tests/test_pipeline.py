"""`pop-tf run`: stage order, resolved configs beside outputs, skip when complete, rerun on change."""

import json
import os
import subprocess
import sys
import time

import pytest

from pop_tf import config as config_lib
from pop_tf import pipeline, serving
from pop_tf.stages import export
from tests.conftest import TINY, tiny_config


def _small(sets=()):
    return config_lib.resolve("demo", ["synth.num_posts=120", "synth.image_size=48", "ingest.image_size=32", *sets])


def _logged(caplog) -> str:
    """What pop_tf logged since the last call (the CLI shows it on stderr)."""
    text = caplog.text
    caplog.clear()
    return text


def test_run_synth_then_ingest_and_skip_when_unchanged(tmp_path, caplog):
    workdir = tmp_path / "w"
    first = pipeline.run(_small(), str(workdir), until="pairs")
    assert set(first) == {"synth", "ingest", "pairs"}
    stats = json.loads(open(first["ingest"]["stats"]).read())
    assert stats["input_records"] == 120 and stats["accepted"] + stats["rejected"] == 120
    assert json.loads((workdir / "ingest" / "config.json").read_text())["image_size"] == 32
    assert json.loads((workdir / "synth" / "config.json").read_text())["num_posts"] == 120
    caplog.clear()
    stat_before = os.stat(first["ingest"]["stats"]).st_mtime_ns
    second = pipeline.run(_small(), str(workdir), until="pairs")
    assert second == first
    assert os.stat(first["ingest"]["stats"]).st_mtime_ns == stat_before
    assert _logged(caplog).count("skipped") == 3
    # an ingest option changes: synth is kept, ingest reruns
    pipeline.run(_small(["ingest.filter_caption=false"]), str(workdir), until="pairs")
    err = _logged(caplog)
    assert "[synth] complete with the same inputs, skipped" in err and "[ingest] running" in err
    assert "[pairs] running" in err  # its input changed
    stats = json.loads(open(first["ingest"]["stats"]).read())
    assert not any(reason.startswith("filter_caption") for reason in stats["per_reason"])


def test_run_cli_dry_run_prints_every_section(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pop_tf", "run", "--preset", "paper", "--workdir",
                             str(tmp_path / "w"), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["ingest"]["image_size"] == 256 and resolved["synth"]["image_size"] == 256
    assert not (tmp_path / "w").exists()


# Runs in a fresh interpreter that never imports pop_tf: what another app gets from saved_models/.
_CLIENT = """
import json, sys
import numpy as np, tensorflow as tf
assert "pop_tf" not in sys.modules
root = sys.argv[1]
images = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
ranker = tf.saved_model.load(root + "/ranker/1")
clusterer = tf.saved_model.load(root + "/clusterer/1")
translator = tf.saved_model.load(root + "/translator/1")
popular = tf.constant(["popular/color"] * 2)
out = {"score": ranker.score(images)["score"].shape.as_list(),
       "cluster": clusterer.assign(images)["cluster"].shape.as_list(),
       "translate": translator.translate(content=images, reference=images[::-1], target_domain=popular)["images"].shape.as_list(),
       "sample": translator.sample(content=images, target_domain=popular, seed=tf.constant(1, tf.int64),
                                   num_samples=tf.constant(3))["images"].shape.as_list(),
       "domains": [n.decode() for n in translator.domains()["names"].numpy()]}
print(json.dumps(out))
"""


def test_run_every_stage_then_skip_rerun_what_changed(tmp_path, caplog):
    workdir, exported = tmp_path / "w", tmp_path / "serving"
    config = lambda *sets: tiny_config(f"export.export_dir={exported}", *sets)
    results = pipeline.run(config(), str(workdir))
    assert set(results) == set(pipeline.STAGE_ORDER)
    assert results["export"]["ranker"] == str(exported / "ranker" / "1")
    assert serving.read_model_card(str(exported / "clusterer" / "1"), "clusterer")
    assert serving.read_model_card(str(exported / "translator" / "1"), "translator")
    metrics = json.loads(open(results["train_ranker"]["metrics"]).read())
    assert "kendall_tau" in metrics  # the synthetic dataset's truth file was found
    assert os.path.isfile(results["score"]["scores"]) and os.path.isfile(results["cluster"]["clusters"])
    for stage in ("train_ranker", "train_translator", "evaluate"):
        assert (workdir / "logs" / stage).is_dir()
    evaluation = json.loads(open(results["evaluate"]["metrics"]).read())
    # the pipeline found the translator, the ranker and the dataset's truth for the evaluation
    assert evaluation["translator"]["uplift"]["style"]["count"] > 0 and "ranker" in evaluation
    assert os.path.isfile(results["evaluate"]["report"])
    client = subprocess.run([sys.executable, "-c", _CLIENT, str(exported)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert client.returncode == 0, client.stderr
    shapes = json.loads(client.stdout.strip().splitlines()[-1])
    assert shapes["score"] == [2] and shapes["cluster"] == [2]
    assert shapes["translate"] == [2, 32, 32, 3] and shapes["sample"] == [2, 3, 32, 32, 3]
    assert "popular/color" in shapes["domains"]
    caplog.clear()
    pipeline.run(config(), str(workdir))
    assert _logged(caplog).count("skipped") == len(pipeline.STAGE_ORDER)
    # a score option reruns score and what reads it, not the ranker or the clusters
    pipeline.run(config("score.popular_quantile=0.8"), str(workdir))
    err = _logged(caplog)
    assert "[train_ranker] complete with the same inputs, skipped" in err and "[score] running" in err
    assert "[cluster] complete" in err and "[train_translator] running" in err
    # exporting the same models again keeps the version; a retrained ranker gets version 2
    again = export.run(config_lib.ExportConfig(workdir=str(workdir), export_dir=str(exported),
                                               models=["ranker"]))
    assert again["ranker"] == str(exported / "ranker" / "1")
    pipeline.run(config("train_ranker.seed=1"), str(workdir))
    assert sorted(os.listdir(exported / "ranker")) == ["1", "2"]
    assert sorted(os.listdir(exported / "clusterer")) == ["1"]
    caplog.clear()
    # --from reruns that stage and the later ones even though nothing changed
    pipeline.run(config("train_ranker.seed=1"), str(workdir), from_stage="evaluate")
    err = _logged(caplog)
    assert "[train_translator] complete with the same inputs, skipped" in err
    assert "[evaluate] running" in err and "[export] running" in err
    assert "report: " + str(workdir / "evaluate" / "report.html") in err  # the closing summary
    assert "mean score uplift" in err and "scored above 1 after" in err and "SavedModel translator" in err


def test_a_second_run_on_a_busy_workdir_is_refused(tmp_path):
    with pipeline._locked(str(tmp_path)):
        with pytest.raises(pipeline.WorkdirBusyError, match=f"{tmp_path} is in use by another pop-tf run \\(pid "):
            pipeline.run(tiny_config(), str(tmp_path))
    assert not (tmp_path / "synth").exists()


def _cli_run(workdir, exported, *sets):
    args = [sys.executable, "-m", "pop_tf", "run", "--workdir", str(workdir), "--export-dir", str(exported)]
    for item in (*TINY, *sets):
        args += ["--set", item]
    return args


def test_killed_translator_training_resumes_without_redoing_earlier_stages(tmp_path):
    workdir, exported = tmp_path / "w", tmp_path / "serving"
    longer = ["train_translator.steps_per_epoch=200", "train_translator.checkpoint_every=5"]
    process = subprocess.Popen(_cli_run(workdir, exported, *longer), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    index = workdir / "train_translator" / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 600
    while not index.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    process.kill()  # SIGKILL: no clean-up code runs
    process.wait()
    assert index.exists(), "the translator never wrote a checkpoint"
    assert not (workdir / "train_translator" / pipeline.MARKER).exists()
    rerun = subprocess.run(_cli_run(workdir, exported, *longer),
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for stage in ("synth", "ingest", "pairs", "train_ranker", "score", "cluster"):
        assert f"[{stage}] complete with the same inputs, skipped" in rerun.stderr
    assert "train_translator: resuming from" in rerun.stderr
    metrics = json.loads((workdir / "train_translator" / "metrics.json").read_text())
    assert metrics["steps"] == 200
    assert (exported / "translator" / "1").is_dir()


def test_export_names_a_missing_model(tmp_path):
    with pytest.raises(export.ExportError, match="no translator SavedModel at .*run the train_translator stage"):
        export.run(config_lib.ExportConfig(workdir=str(tmp_path), models=["translator"]))


def test_until_names_a_stage():
    with pytest.raises(config_lib.ConfigError, match="--until 'evaluat' is not a stage"):
        pipeline.run(tiny_config(), "/nonexistent", until="evaluat")


def test_paper_preset_builds_every_model_and_runs_one_step_of_each_stage(tmp_path):
    # The paper's architectures and loss weights (ResNet50, EfficientNet-B0, DMIT at the official
    # widths, InceptionV3, VGG16) on a tiny dataset: 128² instead of 256² and random weights
    # (no ImageNet download here), one step per training stage.
    config = config_lib.resolve("paper", [
        "synth.num_posts=160", "synth.image_size=128", "ingest.image_size=128",
        "train_ranker.weights=none", "train_ranker.image_size=128", "train_ranker.batch_size=2",
        "train_ranker.epochs=1", "train_ranker.steps_per_epoch=1", "train_ranker.num_logged_images=2",
        "cluster.weights=none", "cluster.num_clusters=3", "train_translator.image_size=128",
        "train_translator.epochs=1", "train_translator.steps_per_epoch=1", "train_translator.eval_inputs=2",
        "train_translator.eval_samples=2", "train_translator.num_sample_edges=2",
        "evaluate.inception_weights=none", "evaluate.lpips_weights=none", "evaluate.num_inputs=2",
        "evaluate.samples_per_input=2", "evaluate.ndb_bins=2", "evaluate.max_images=2",
        "evaluate.attribute_steps=50", "evaluate.attribute_width=8",
        f"export.export_dir={tmp_path / 'serving'}"])
    assert (config.train_ranker.backbone, config.train_translator.base_filters) == ("resnet50", 64)
    assert (config.train_translator.lambda_rec, config.train_translator.decoder_residual_blocks) == (10.0, 6)
    results = pipeline.run(config, str(tmp_path / "w"))
    assert set(results) == set(pipeline.STAGE_ORDER)
    card = serving.read_model_card(str(tmp_path / "serving" / "translator" / "1"), "translator")
    assert card["config"]["base_filters"] == 64 and card["image_size"] == 128
    assert json.loads(open(results["train_translator"]["metrics"]).read())["steps"] == 1
