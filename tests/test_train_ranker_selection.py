"""The ranker keeps its best held-out epoch, and its regularisers are applied (issue 16, part 3)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pop_tf import training
from pop_tf.models import ranker as ranker_lib
from pop_tf.stages import train_ranker
from tests.conftest import tiny_config

SIZE = 32


def _tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return model


def _selection(model, directory, step=lambda: 0):
    return training.BestEpoch(tf.train.Checkpoint(model=model), str(directory), step, "val_pairwise_accuracy",
                              "max", tie_breaker="val_loss")


def _epoch(selection, model, epoch, accuracy, loss):
    """One 'epoch': new weights, then the epoch-end logs Keras would pass."""
    model.set_weights([np.full(w.shape, float(epoch + 1), np.float32) for w in model.get_weights()])
    selection.on_epoch_end(epoch, {"val_pairwise_accuracy": accuracy, "val_loss": loss})
    return [w.copy() for w in model.get_weights()]


def test_best_epoch_restores_the_weights_of_the_best_held_out_epoch(tmp_path):
    model = _tiny_model()
    selection = _selection(model, tmp_path / "best")
    selection.set_model(model)
    first = _epoch(selection, model, 0, 0.80, 0.50)  # the best, as on the 1,200-post dataset
    for epoch, accuracy in ((1, 0.72), (2, 0.76), (3, 0.64)):
        _epoch(selection, model, epoch, accuracy, 0.60)
    selection.on_train_end()
    for restored, expected in zip(model.get_weights(), first):
        np.testing.assert_array_equal(restored, expected)
    state = json.loads((tmp_path / "best" / "best.json").read_text())
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    # Only the best epoch's weights stay on disk.
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "best.json", "epoch-1-step-0.data-00000-of-00001", "epoch-1-step-0.index"]


def test_equal_accuracy_is_decided_by_the_lower_held_out_loss(tmp_path):
    model = _tiny_model()
    selection = _selection(model, tmp_path / "best")
    _epoch(selection, model, 0, 0.80, 0.50)
    _epoch(selection, model, 1, 0.80, 0.55)
    third = _epoch(selection, model, 2, 0.80, 0.40)
    _epoch(selection, model, 3, 0.72, 0.30)
    assert selection.restore()["epoch"] == 3
    np.testing.assert_array_equal(model.get_weights()[0], third[0])


def test_a_resumed_run_compares_its_epochs_with_those_before_the_kill(tmp_path):
    model = _tiny_model()
    first = _epoch(_selection(model, tmp_path / "best"), model, 0, 0.84, 0.5)
    resumed = _selection(model, tmp_path / "best")  # a new process: the record comes from disk
    _epoch(resumed, model, 1, 0.80, 0.4)
    assert resumed.restore()["epoch"] == 1
    np.testing.assert_array_equal(model.get_weights()[0], first[0])
    resumed.reset()  # a run from scratch forgets them
    assert resumed.restore() is None and not (tmp_path / "best").exists()


def test_stage_ships_the_selected_epoch_and_records_it(pairs_workdir, tmp_path, caplog):
    cfg = tiny_config(f"train_ranker.output={tmp_path / 'ranker'}", "train_ranker.epochs=3",
                      "train_ranker.steps_per_epoch=2", "train_ranker.num_logged_images=0").train_ranker
    cfg.input, cfg.images = str(pairs_workdir / "pairs"), str(pairs_workdir / "ingest")
    with caplog.at_level("INFO", logger="pop_tf.stages.train_ranker"):
        paths = train_ranker.run(cfg)
    metrics = json.loads(open(paths["metrics"]).read())
    history = metrics["epochs_held_out"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and metrics["steps"] == 6
    best = max(history, key=lambda h: (h["pairwise_accuracy"], -h["loss"]))
    assert metrics["selected_epoch"] == best["epoch"] and metrics["selected_step"] == 2 * best["epoch"]
    # The shipped weights are that epoch's: re-evaluating them gives its held-out figures.
    assert metrics["pairwise_accuracy"] == pytest.approx(best["pairwise_accuracy"])
    assert metrics["test_loss"] == pytest.approx(best["loss"], rel=1e-4)
    assert f"selected epoch {best['epoch']}" in caplog.text
    # The last step is what a rerun resumes from, whichever epoch was shipped.
    assert tf.train.latest_checkpoint(paths["checkpoints"]).endswith("-6")


def test_dropout_before_the_head_is_applied_in_training_only():
    keras.utils.set_random_seed(0)
    ranker = ranker_lib.build_ranker("small", "none", SIZE, small_width=4, dropout=0.5)
    images = tf.random.uniform([4, SIZE, SIZE, 3], seed=1)
    assert isinstance(ranker.dropout, keras.layers.Dropout) and ranker.dropout.rate == 0.5
    # Batch norm is deterministic for one batch, so two training calls differ only by dropout.
    assert not np.allclose(ranker(images, training=True), ranker(images, training=True))
    np.testing.assert_array_equal(ranker(images), ranker(images))
    assert ranker_lib.PopularityRanker.from_config(ranker.get_config()).dropout_rate == 0.5
    plain = ranker_lib.build_ranker("small", "none", SIZE, small_width=4)
    assert plain.dropout is None and len(plain.weights) == len(ranker.weights)


def test_label_smoothing_moves_the_training_targets_only():
    logits, targets = tf.constant([2.0, -1.0, 0.5]), tf.constant([1.0, 0.0, 1.0])
    smoothed = targets * 0.8 + 0.1
    expected = -np.mean(smoothed * np.log(tf.sigmoid(logits)) + (1 - smoothed) * np.log(1 - tf.sigmoid(logits)))
    assert float(ranker_lib.pairwise_loss(targets, logits, 0.2)) == pytest.approx(expected, rel=1e-5)
    keras.utils.set_random_seed(0)
    trainer = ranker_lib.SiameseRankerTrainer(ranker_lib.build_ranker("small", "none", SIZE, small_width=4),
                                              label_smoothing=0.2)
    rng = np.random.default_rng(0)
    batch = {"image_a": tf.constant(rng.integers(0, 256, (4, SIZE, SIZE, 3)), tf.uint8),
             "image_b": tf.constant(rng.integers(0, 256, (4, SIZE, SIZE, 3)), tf.uint8),
             "target": tf.constant([1.0, 0.0, 1.0, 0.0])}
    trained, _ = trainer._compute(batch, training=True)
    logits = ranker_lib.pairwise_logits(trainer.ranker, batch["image_a"], batch["image_b"], True)
    assert float(trained) == pytest.approx(float(ranker_lib.pairwise_loss(batch["target"], logits, 0.2)), rel=1e-5)
    held_out, _ = trainer._compute(batch, training=False)
    logits = ranker_lib.pairwise_logits(trainer.ranker, batch["image_a"], batch["image_b"], False)
    assert float(held_out) == pytest.approx(float(ranker_lib.pairwise_loss(batch["target"], logits)), rel=1e-5)


@pytest.mark.parametrize("key", ["dropout", "label_smoothing"])
def test_regularisers_out_of_range_are_one_sentence(key, pairs_workdir, tmp_path):
    cfg = tiny_config(f"train_ranker.output={tmp_path / 'r'}").train_ranker
    cfg.input = str(pairs_workdir / "pairs")
    setattr(cfg, key, 1.0)
    with pytest.raises(Exception, match=f"train_ranker.{key}.*must be in \\[0, 1\\)"):
        train_ranker.run(cfg)
