"""Checkpoints a crash or a user damaged: never a traceback, never a silent start from step 0 over
the checkpoints still there, and an unreadable newest checkpoint is replaced by the final save.

Variants are generated: truncated data and index files of every length class, random garbage
state files (binary, UTF-8, cut short, empty), state files naming checkpoints that are gone.
"""

import os
import random

import numpy as np
import pytest
import tensorflow as tf

from pop_tf import errors, pipeline, training

STEPS = (2, 4, 6)


def _weights(step):
    return np.full(64, float(step), np.float32)


def _folder_with_checkpoints(folder, steps=STEPS):
    weights = tf.Variable(np.zeros(64, np.float32))
    checkpoint = tf.train.Checkpoint(weights=weights)
    manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=len(steps))
    for step in steps:
        weights.assign(_weights(step))
        manager.save(checkpoint_number=step)
    return weights, checkpoint


def _files(folder) -> dict:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if name != training.STATE}


def _damage(path_prefix, rng, how):
    data = tf.io.gfile.glob(path_prefix + ".data-*")[0]
    target = path_prefix + ".index" if how.startswith("index") else data
    size = os.path.getsize(target)
    if how.endswith("empty"):
        keep = 0
    elif how.endswith("half"):
        keep = size // 2
    else:  # cut anywhere short of the end
        keep = rng.randrange(0, size)
    if how.endswith("garbage"):
        with open(target, "r+b") as f:
            f.seek(rng.randrange(0, max(1, size // 2)))
            f.write(bytes(rng.randrange(256) for _ in range(max(8, size // 2))))
        return
    with open(target, "r+b") as f:
        f.truncate(keep)


DAMAGE = ("data-empty", "data-half", "data-cut", "data-garbage", "index-empty", "index-half", "index-cut",
          "index-garbage")


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_newest_checkpoint_is_replaced_by_the_final_save_of_its_step(how, tmp_path, caplog):
    rng = random.Random(DAMAGE.index(how))
    for attempt in range(3):
        folder = tmp_path / f"{how}-{attempt}"
        weights, checkpoint = _folder_with_checkpoints(folder)
        _damage(str(folder / "ckpt-6"), rng, how)
        manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
        weights.assign(np.zeros(64, np.float32))
        assert training.restore_newest(checkpoint, manager, "stage") == str(folder / "ckpt-4")
        assert np.all(weights.numpy() == 4.0)
        # the run trains steps 5 and 6 (no save on the way: every 4 steps) and ends at step 6
        weights.assign(_weights(66))
        control = training.TrainingCallbacks(manager, lambda: 6, every=4, total_steps=6)
        control.save_final()
        again = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
        weights.assign(np.zeros(64, np.float32))
        assert training.restore_newest(checkpoint, again, "stage") == str(folder / "ckpt-6")
        assert np.all(weights.numpy() == 66.0), (how, attempt)
    assert "is unreadable" in caplog.text


def test_an_intact_newest_checkpoint_of_the_step_is_not_saved_again(tmp_path):
    weights, checkpoint = _folder_with_checkpoints(tmp_path)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    training.restore_newest(checkpoint, manager, "stage")
    before = _files(tmp_path)
    training.TrainingCallbacks(manager, lambda: 6, every=4, total_steps=6).save_final()  # nothing left to train
    assert _files(tmp_path) == before


def _garbage_states(rng):
    """Generated state files TensorFlow cannot read as a CheckpointState."""
    good = b'model_checkpoint_path: "ckpt-6"\nall_model_checkpoint_paths: "ckpt-2"\n'
    states = {"empty": b"", "binary": bytes(range(256)), "nul": b"\0" * 64, "utf8-words": "héllo wörld }{".encode(),
              "cut-proto": good[:17], "cut-quote": good[:29], "unknown-field": b"best_checkpoint: 1\n",
              "utf16": 'model_checkpoint_path: "ckpt-6"'.encode("utf-16")}
    for i in range(12):
        states[f"random-{i}"] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    return states


def test_a_garbage_state_file_resumes_from_the_newest_checkpoint_present(tmp_path, caplog):
    rng = random.Random(3)
    outcomes = {}
    for name, garbage in _garbage_states(rng).items():
        folder = tmp_path / name
        weights, checkpoint = _folder_with_checkpoints(folder)
        before = _files(folder)
        (folder / training.STATE).write_bytes(garbage)
        # Through the manager the stages build: its constructor may fail on garbage (a traceback)
        # or take the folder as empty; either way the run must not start from step 0.
        try:
            manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
            outcome = "tensorflow read it as empty"
        except Exception as e:  # the traceback the red team saw; `checkpoint_manager` repairs first
            outcome = f"tensorflow raised {type(e).__name__}"
            manager = training.checkpoint_manager(checkpoint, str(folder), "stage")
        weights.assign(np.zeros(64, np.float32))
        assert training.restore_newest(checkpoint, manager, "stage") == str(folder / "ckpt-6"), name
        assert np.all(weights.numpy() == 6.0), name
        assert _files(folder) == before  # nothing overwritten
        # and repaired before any manager reads it, the manager lists them all again
        (folder / training.STATE).write_bytes(garbage)
        assert training.repair_checkpoint_state(str(folder), "stage")
        repaired = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
        assert repaired.checkpoints == [str(folder / f"ckpt-{s}") for s in STEPS], name
        assert repaired.latest_checkpoint == str(folder / "ckpt-6")
        outcomes[name] = outcome
    assert len(outcomes) == 20
    assert any("raised" in o for o in outcomes.values())  # the traceback kinds were among them


def test_a_garbage_state_file_without_checkpoints_is_removed(tmp_path):
    (tmp_path / training.STATE).write_bytes(bytes(range(200)))
    assert training.repair_checkpoint_state(str(tmp_path), "stage")
    assert not (tmp_path / training.STATE).exists()
    assert not training.repair_checkpoint_state(str(tmp_path), "stage")  # nothing to do


def test_pop_tf_run_repairs_the_state_file_before_a_training_stage(tmp_path, monkeypatch):
    folder = tmp_path / "w" / "train_ranker" / "checkpoints"
    _folder_with_checkpoints(folder)
    (folder / training.STATE).write_bytes(bytes(range(256)))
    seen = {}

    def stage_run(section):
        seen["state"] = tf.train.get_checkpoint_state(str(folder)).model_checkpoint_path
        return {}

    import pop_tf.stages.train_ranker as train_ranker

    monkeypatch.setattr(train_ranker, "run", stage_run)
    monkeypatch.setattr(pipeline, "_check_stage_paths", lambda stage, section: None)
    from tests.conftest import tiny_config

    config = tiny_config()
    pipeline._run_stage("train_ranker", config, str(tmp_path / "w"), str(tmp_path / "data"))
    assert seen["state"] == str(folder / "ckpt-6")


def _state_naming(folder, steps, timestamps=True):
    lines = [f'model_checkpoint_path: "ckpt-{steps[-1]}"'] + [f'all_model_checkpoint_paths: "ckpt-{s}"' for s in steps]
    if timestamps:
        lines += [f"all_model_checkpoint_timestamps: {2e9 + s}" for s in steps] + ["last_preserved_timestamp: 1.0"]
    (folder / training.STATE).write_text("\n".join(lines) + "\n")


def test_a_state_file_naming_only_missing_checkpoints_resumes_from_those_present(tmp_path):
    rng = random.Random(5)
    for attempt in range(10):
        folder = tmp_path / str(attempt)
        weights, checkpoint = _folder_with_checkpoints(folder)
        before = _files(folder)
        missing = sorted(rng.sample(range(7, 60), rng.randrange(1, 4)))
        _state_naming(folder, missing, timestamps=bool(attempt % 2))
        manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
        weights.assign(np.zeros(64, np.float32))
        assert training.restore_newest(checkpoint, manager, "stage") == str(folder / "ckpt-6"), missing
        assert np.all(weights.numpy() == 6.0)
        # the run goes on from step 6: its next saves take new names, the older files stay as they were
        control = training.TrainingCallbacks(manager, lambda: missing[-1], every=1000, total_steps=missing[-1])
        control.save_final()  # the state's newest name is this step's, but the file is gone: saved
        assert tf.io.gfile.exists(str(folder / f"ckpt-{missing[-1]}.index"))
        assert {k: v for k, v in _files(folder).items() if k in before} == before


def test_when_no_checkpoint_present_is_readable_the_run_stops_with_a_sentence(tmp_path, capsys):
    rng = random.Random(9)
    for attempt in range(6):
        folder = tmp_path / str(attempt)
        weights, checkpoint = _folder_with_checkpoints(folder)
        for step in STEPS:
            _damage(str(folder / f"ckpt-{step}"), rng, rng.choice(DAMAGE))
        before = _files(folder)
        if attempt % 2:
            _state_naming(folder, [99])  # and a state naming only a checkpoint that is gone
        else:
            (folder / training.STATE).write_bytes(b"garbage")
        manager = training.checkpoint_manager(checkpoint, str(folder), "stage")
        with pytest.raises(training.CheckpointMismatchError) as refused:
            training.restore_newest(checkpoint, manager, "train_ranker")
        message = str(refused.value)
        assert f"none of the 3 checkpoints in {folder}" in message and "--from train_ranker" in message
        assert errors.report("python -m pop_tf.train ranker", refused.value) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m pop_tf.train ranker: error: ")
        assert _files(folder) == before  # none was overwritten


def test_a_state_naming_missing_checkpoints_in_an_empty_folder_starts_fresh(tmp_path):
    checkpoint = tf.train.Checkpoint(weights=tf.Variable(np.zeros(4, np.float32)))
    _state_naming(tmp_path, [4, 8])
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    assert training.restore_newest(checkpoint, manager, "stage") == ""  # nothing there to lose


def test_a_full_disk_while_checkpointing_is_one_sentence_naming_the_folder(tmp_path):
    weights, checkpoint = _folder_with_checkpoints(tmp_path)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)

    class FullDisk:
        directory = manager.directory
        latest_checkpoint = manager.latest_checkpoint

        def save(self, checkpoint_number=None):
            raise tf.errors.ResourceExhaustedError(None, None,
                                                   f"{tmp_path}/ckpt-8_temp/part-0; No space left on device")

    control = training.TrainingCallbacks(FullDisk(), lambda: 8, every=4, total_steps=8)
    with pytest.raises(errors.StorageError, match=f"^no space left on the device holding {tmp_path};"):
        control.save_final()
