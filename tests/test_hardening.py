"""Crash and environment faults: corrupt checkpoints, full disks, paths that cannot be written."""

import errno
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from pop_tf import cli, serving, synth, training
from pop_tf import config as config_lib


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    weights = tf.Variable(np.zeros(1000, np.float32))
    checkpoint = tf.train.Checkpoint(weights=weights)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    weights.assign(np.full(1000, 1.0, np.float32))
    first = manager.save()
    weights.assign(np.full(1000, 2.0, np.float32))
    newest = manager.save()
    data_file = tf.io.gfile.glob(newest + ".data-*")[0]
    with open(data_file, "r+b") as f:  # a crash mid-write: the tensor bytes end early
        f.truncate(100)
    weights.assign(np.zeros(1000, np.float32))
    restored = training.restore_newest(checkpoint, manager, "stage")
    assert restored == first
    assert np.all(weights.numpy() == 1.0)
    assert f"checkpoint {newest} is unreadable" in caplog.text


def test_checkpoints_that_fit_no_more_stop_the_run_naming_the_change_and_survive(tmp_path):
    checkpoint = tf.train.Checkpoint(weights=tf.Variable(np.ones(8, np.float32)))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    written = [manager.save(), manager.save()]
    wider = tf.train.Checkpoint(weights=tf.Variable(np.zeros(16, np.float32)))
    wider_manager = tf.train.CheckpointManager(wider, str(tmp_path), max_to_keep=3)
    with pytest.raises(training.CheckpointMismatchError) as error:
        training.restore_newest(wider, wider_manager, "stage", ["width: 8 -> 16"])
    message = str(error.value)
    assert "none of the 2 checkpoints" in message and "this run changed width: 8 -> 16" in message
    assert "--from stage" in message
    assert all(tf.io.gfile.exists(path + ".index") for path in written)
    # Without a recorded config the error falls back to what TensorFlow said.
    with pytest.raises(training.CheckpointMismatchError, match="last error was"):
        training.restore_newest(wider, wider_manager, "stage")


def test_changed_settings_lists_each_difference_against_the_written_config(tmp_path):
    cfg = config_lib.RankerConfig()
    assert config_lib.changed_settings(cfg, str(tmp_path)) == []
    config_lib.write_resolved(cfg, str(tmp_path))
    assert config_lib.changed_settings(cfg, str(tmp_path)) == []
    cfg.mixed_precision, cfg.epochs = "bfloat16", cfg.epochs + 1
    assert config_lib.changed_settings(cfg, str(tmp_path)) == [
        f"epochs: {cfg.epochs - 1!r} -> {cfg.epochs!r}", "mixed_precision: 'none' -> 'bfloat16'"]


def test_a_workdir_under_a_file_is_one_sentence_and_nothing_is_written(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder is needed")
    result = subprocess.run([sys.executable, "-m", "pop_tf", "run", "--preset", "demo", "--workdir",
                             str(blocker / "work")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("pop-tf run: error: ") and str(blocker) in message and "not a folder" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_a_full_disk_is_one_sentence_with_what_to_do(tmp_path, monkeypatch, capsys):
    def full_disk(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "synth" / "images"))

    monkeypatch.setattr(synth, "run", full_disk)
    assert cli.main(["run", "--workdir", str(tmp_path / "w"), "--until", "synth"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"pop-tf run: error: no space left on the device holding {tmp_path / 'w' / 'synth'}; "
                   "free some space or point --workdir/--output at another disk, then rerun")
    assert not (tmp_path / "w" / "synth" / "_COMPLETE").exists()


def test_ingest_killed_while_writing_leaves_nothing_taken_as_complete(tmp_path):
    dataset, output = tmp_path / "dataset", tmp_path / "ingest"
    synth.run(config_lib.SynthConfig(output=str(dataset), num_posts=300, image_size=96, seed=3))
    command = [sys.executable, "-m", "pop_tf", "ingest", "--input", str(dataset), "--output", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(output.glob(".staging-*/*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()  # SIGKILL while the job writes its shards
    process.wait()
    if process.returncode == 0:
        # A race, not a pass: the shards are written last, and on a very fast machine the job can
        # finish within one poll interval of the first staged file. Nothing was checked then.
        pytest.skip("ingest finished before it could be killed")
    assert not (output / "stats.json").exists() and not list(output.glob("train-*"))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    stats = json.loads((output / "stats.json").read_text())
    assert stats["accepted"] + stats["rejected"] == stats["input_records"] == 300
    assert not list(output.glob(".staging-*"))  # the killed run's leftovers are gone


def test_an_export_cut_short_is_never_a_version(tmp_path):
    base = tmp_path / "serving" / "ranker"
    (base / "1").mkdir(parents=True)
    (base / ".export-crashed").mkdir()  # what a kill between copy and rename leaves
    assert serving.next_version(str(base)) == 2  # hidden temporaries are not versions
