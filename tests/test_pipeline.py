"""`pop-tf run`: stage order, resolved configs beside outputs, skip when complete, rerun on change."""

import json
import os
import subprocess
import sys

import pytest

from pop_tf import config as config_lib
from pop_tf import pipeline, serving
from pop_tf.stages import export
from tests.conftest import tiny_config


def _small(sets=()):
    return config_lib.resolve("demo", ["synth.num_posts=120", "synth.image_size=48", "ingest.image_size=32", *sets])


def test_run_synth_then_ingest_and_skip_when_unchanged(tmp_path, capsys):
    workdir = tmp_path / "w"
    first = pipeline.run(_small(), str(workdir), until="pairs")
    assert set(first) == {"synth", "ingest", "pairs"}
    stats = json.loads(open(first["ingest"]["stats"]).read())
    assert stats["input_records"] == 120 and stats["accepted"] + stats["rejected"] == 120
    assert json.loads((workdir / "ingest" / "config.json").read_text())["image_size"] == 32
    assert json.loads((workdir / "synth" / "config.json").read_text())["num_posts"] == 120
    capsys.readouterr()
    stat_before = os.stat(first["ingest"]["stats"]).st_mtime_ns
    second = pipeline.run(_small(), str(workdir), until="pairs")
    assert second == first
    assert os.stat(first["ingest"]["stats"]).st_mtime_ns == stat_before
    assert capsys.readouterr().err.count("skipped") == 3
    # an ingest option changes: synth is kept, ingest reruns
    pipeline.run(_small(["ingest.filter_caption=false"]), str(workdir), until="pairs")
    err = capsys.readouterr().err
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


def test_run_trains_scores_clusters_exports_then_skips(tmp_path, capsys):
    workdir, exported = tmp_path / "w", tmp_path / "serving"
    config = lambda *sets: tiny_config(f"export.export_dir={exported}", *sets)
    results = pipeline.run(config(), str(workdir))
    assert set(results) == {"synth", "ingest", "pairs", "train_ranker", "score", "cluster", "export"}
    assert results["export"]["ranker"] == str(exported / "ranker" / "1")
    assert serving.read_model_card(str(exported / "clusterer" / "1"), "clusterer")
    metrics = json.loads(open(results["train_ranker"]["metrics"]).read())
    assert "kendall_tau" in metrics  # the synthetic dataset's truth file was found
    assert os.path.isfile(results["score"]["scores"]) and os.path.isfile(results["cluster"]["clusters"])
    assert (workdir / "logs" / "train_ranker").is_dir()
    capsys.readouterr()
    pipeline.run(config(), str(workdir))
    assert capsys.readouterr().err.count("skipped") == 7
    # a score option reruns score only: cluster and export do not read its outputs
    pipeline.run(config("score.popular_quantile=0.8"), str(workdir))
    err = capsys.readouterr().err
    assert "[train_ranker] complete with the same inputs, skipped" in err and "[score] running" in err
    assert "[cluster] complete" in err and "[export] complete" in err
    # exporting the same models again keeps the version; a retrained ranker gets version 2
    again = export.run(config_lib.ExportConfig(workdir=str(workdir), export_dir=str(exported),
                                               models=["ranker"]))
    assert again["ranker"] == str(exported / "ranker" / "1")
    pipeline.run(config("train_ranker.seed=1"), str(workdir))
    assert sorted(os.listdir(exported / "ranker")) == ["1", "2"]
    assert sorted(os.listdir(exported / "clusterer")) == ["1"]


def test_export_names_a_missing_model(tmp_path):
    with pytest.raises(export.ExportError, match="no translator SavedModel at .*run the train_translator stage"):
        export.run(config_lib.ExportConfig(workdir=str(tmp_path), models=["translator"]))


def test_until_names_a_stage():
    with pytest.raises(config_lib.ConfigError, match="--until 'evaluat' is not a stage"):
        pipeline.run(tiny_config(), "/nonexistent", until="evaluat")
