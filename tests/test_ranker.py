"""The popularity ranker: loss by hand, gradients and learning rates, input pipeline, training
stage with resume and NaN stop, the SavedModel in a fresh process, and the score stage."""

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import data, records, serving, training
from pop_tf.models import backbones
from pop_tf.models import ranker as ranker_lib
from pop_tf.stages import score, train_ranker
from tests.conftest import tiny_config

SIZE = 32


def _tiny_ranker(seed=0):
    keras.utils.set_random_seed(seed)
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("small", "none", SIZE, small_width=4))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    return ranker


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"image_a": tf.constant(rng.integers(0, 256, (n, SIZE, SIZE, 3)), tf.uint8),
            "image_b": tf.constant(rng.integers(0, 256, (n, SIZE, SIZE, 3)), tf.uint8),
            "target": tf.constant([1.0, 0.0] * (n // 2))}


# ------------------------------------------------------------------------------ model and loss


def test_pairwise_loss_matches_hand_computed_bce():
    # BCE(sigmoid(0), 1) = log 2; BCE(sigmoid(2), 0) = log(1 + e^2)
    loss = ranker_lib.pairwise_loss(tf.constant([1.0, 0.0]), tf.constant([0.0, 2.0]))
    assert float(loss) == pytest.approx((math.log(2) + math.log(1 + math.e ** 2)) / 2, rel=1e-6)


def test_pairwise_logits_are_score_differences_in_one_batch():
    ranker = _tiny_ranker()
    batch = _batch()
    logits = ranker_lib.pairwise_logits(ranker, batch["image_a"], batch["image_b"], training=False)
    score_a = ranker(tf.cast(batch["image_a"], tf.float32) / 255.0)
    score_b = ranker(tf.cast(batch["image_b"], tf.float32) / 255.0)
    np.testing.assert_allclose(logits.numpy(), (score_a - score_b).numpy(), atol=1e-5)
    assert ranker(tf.zeros([3, SIZE, SIZE, 3])).shape == (3,)


def test_gradients_reach_backbone_and_head_with_their_own_learning_rates():
    ranker = _tiny_ranker()
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    backbone_lr, head_lr = 1e-4, 1e-2
    trainer.compile(keras.optimizers.Adam(backbone_lr), keras.optimizers.Adam(head_lr))
    trainer.build_optimizers()
    # residual branches start at zero (zero-initialised last BN scale); open them so every
    # backbone parameter gets a gradient on the first step
    for layer in ranker.backbone.layers:
        if layer.name.endswith("_bn2"):
            layer.gamma.assign(tf.ones_like(layer.gamma))
    before_backbone = [v.numpy().copy() for v in ranker.backbone.trainable_variables]
    before_head = [v.numpy().copy() for v in ranker.head.trainable_variables]
    logs = trainer.train_step(_batch(8))
    assert set(logs) == {"loss", "pairwise_accuracy"}
    # Adam's first step moves every parameter with a non-zero gradient by almost exactly lr.
    backbone_steps = np.concatenate([np.abs(v.numpy() - b).ravel()
                                     for v, b in zip(ranker.backbone.trainable_variables, before_backbone)])
    kernel_step, bias_step = [np.abs(v.numpy() - b) for v, b in zip(ranker.head.trainable_variables, before_head)]
    moved_backbone = backbone_steps[backbone_steps > 0]
    assert len(moved_backbone) > 0.99 * len(backbone_steps)
    np.testing.assert_allclose(np.median(moved_backbone), backbone_lr, rtol=0.05)
    np.testing.assert_allclose(kernel_step, head_lr, rtol=0.05)
    # the head's bias cancels in f(A) - f(B): its gradient is exactly zero, so it never moves
    np.testing.assert_array_equal(bias_step, 0.0)
    # the two optimizers each hold only their own variables
    assert int(trainer.backbone_optimizer.iterations) == int(trainer.head_optimizer.iterations) == 1


def test_test_step_shares_the_loss_and_changes_nothing():
    ranker = _tiny_ranker()
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    trainer.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    batch = _batch()
    weights = [v.numpy().copy() for v in ranker.variables]
    logs = trainer.test_step(batch)
    logits = ranker_lib.pairwise_logits(ranker, batch["image_a"], batch["image_b"], training=False)
    assert float(logs["loss"]) == pytest.approx(float(ranker_lib.pairwise_loss(batch["target"], logits)), rel=1e-5)
    for v, w in zip(ranker.variables, weights):
        np.testing.assert_array_equal(v.numpy(), w)


def _one_sgd_step(precision: str, batch):
    """A fresh tiny ranker (seed 0) after one SGD step; returns it, the logs and each variable's change."""
    keras.utils.set_random_seed(0)
    ranker = ranker_lib.build_ranker("small", "none", SIZE, small_width=4, mixed_precision=precision)
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    backbone_optimizer, head_optimizer = keras.optimizers.SGD(0.1), keras.optimizers.SGD(1.0)
    if precision == "float16":
        # Different loss scales, so the head's gradients must be moved from the backbone's scale to its own.
        backbone_optimizer = keras.optimizers.LossScaleOptimizer(backbone_optimizer)
        head_optimizer = keras.optimizers.LossScaleOptimizer(head_optimizer, initial_scale=2.0 ** 8)
    trainer.compile(backbone_optimizer, head_optimizer)
    trainer.build_optimizers()
    variables = ranker.backbone.trainable_variables + ranker.head.trainable_variables
    before = [v.numpy().copy() for v in variables]
    logs = trainer.train_step(batch)
    return ranker, logs, [v.numpy() - b for v, b in zip(variables, before)]


def test_mixed_precision_step_computes_in_float16_and_unscales_each_optimizers_gradients():
    batch = _batch(8)
    ranker, logs, mixed = _one_sgd_step("float16", batch)
    assert keras.config.dtype_policy().name == "float32"  # restored after building
    assert ranker.backbone.compute_dtype == "float16" and ranker.backbone.variable_dtype == "float32"
    assert ranker.head.compute_dtype == "float32"
    assert ranker(tf.zeros([2, SIZE, SIZE, 3])).dtype == tf.float32
    assert math.isfinite(float(logs["loss"]))
    _, plain_logs, plain = _one_sgd_step("none", batch)
    assert float(logs["loss"]) == pytest.approx(float(plain_logs["loss"]), rel=1e-2)
    # SGD moves by lr × gradient: a scale left in (or the wrong one taken out) would be off by 2^7 or more.
    mixed_flat, plain_flat = np.concatenate([d.ravel() for d in mixed]), np.concatenate([d.ravel() for d in plain])
    assert np.linalg.norm(mixed_flat) == pytest.approx(np.linalg.norm(plain_flat), rel=0.05)
    assert np.corrcoef(mixed_flat, plain_flat)[0, 1] > 0.99
    np.testing.assert_allclose(mixed[-2], plain[-2], rtol=0.05, atol=1e-3 * np.abs(plain[-2]).max())  # head kernel


def test_bfloat16_step_computes_in_bfloat16_without_loss_scaling_and_moves_like_float32():
    batch = _batch(8)
    ranker, logs, mixed = _one_sgd_step("bfloat16", batch)
    assert keras.config.dtype_policy().name == "float32"
    assert ranker.backbone.compute_dtype == "bfloat16" and ranker.backbone.variable_dtype == "float32"
    assert ranker.head.compute_dtype == "float32"
    assert ranker(tf.zeros([2, SIZE, SIZE, 3])).dtype == tf.float32
    _, plain_logs, plain = _one_sgd_step("none", batch)
    # bfloat16 keeps 8 mantissa bits: the loss to ~1%, the update's direction almost exactly.
    assert float(logs["loss"]) == pytest.approx(float(plain_logs["loss"]), rel=2e-2)
    mixed_flat, plain_flat = np.concatenate([d.ravel() for d in mixed]), np.concatenate([d.ravel() for d in plain])
    assert np.linalg.norm(mixed_flat) == pytest.approx(np.linalg.norm(plain_flat), rel=0.1)
    assert np.corrcoef(mixed_flat, plain_flat)[0, 1] > 0.98


def test_ranker_config_round_trip():
    ranker = _tiny_ranker()
    clone = ranker_lib.PopularityRanker.from_config(ranker.get_config())
    clone(tf.zeros([1, SIZE, SIZE, 3]))
    assert len(clone.weights) == len(ranker.weights)


def test_weights_options_fail_with_one_sentence(tmp_path):
    with pytest.raises(backbones.WeightsError, match="does not exist"):
        ranker_lib.build_backbone("resnet50", str(tmp_path / "missing.weights.h5"), SIZE)
    with pytest.raises(backbones.WeightsError, match="no ImageNet weights"):
        ranker_lib.build_backbone("small", "imagenet", SIZE)
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(backbones.WeightsError, match="Could not load"):
        ranker_lib.build_backbone("small", str(bad), SIZE)


def test_hub_module_backbone_trains_its_variables(tmp_path):
    module = tf.train.Checkpoint()
    module.w = tf.Variable(tf.ones([3, 5]))
    module.variables = [module.w]
    module.trainable_variables = [module.w]
    module.__call__ = tf.function(lambda x: tf.reduce_mean(x, [1, 2]) @ module.w,
                                  input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "module"))
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("resnet50", f"hub:{tmp_path / 'module'}", SIZE))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    assert len(ranker.backbone.trainable_variables) == 1
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    trainer.compile(keras.optimizers.Adam(0.1), keras.optimizers.Adam(0.1))
    trainer.build_optimizers()
    trainer.train_step(_batch())
    assert not np.allclose(ranker.backbone.trainable_variables[0].numpy(), 1.0)


# ------------------------------------------------------------------------------ input pipeline


def _write_pairs(path, count):
    rng = np.random.default_rng(1)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(path, options) as writer:
        for i in range(count):
            a = np.zeros((SIZE, SIZE, 3), np.uint8)
            a[:, : SIZE // 4] = 200  # marker on the left: a flip moves it to the right
            b = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
            png = lambda im: tf.io.encode_png(im).numpy()
            writer.write(records.encode_pair({
                "post_id_a": f"a{i}", "post_id_b": f"b{i}", "user_id": "u", "split": "train",
                "image_png_a": png(a), "image_png_b": png(b), "likes_a": 10, "likes_b": 1,
                "posted_at_unix_a": 0, "posted_at_unix_b": 0, "image_size": SIZE, "margin": 1.0}))


def test_pair_dataset_swaps_with_target_and_flips_deterministically(tmp_path):
    _write_pairs(str(tmp_path / "train_pairs-0.tfrecord.gz"), 64)
    pattern = str(tmp_path / "train_pairs-*.tfrecord.gz")
    batch = next(iter(data.pair_dataset(pattern, SIZE, SIZE, 64, training=True, seed=3)))
    again = next(iter(data.pair_dataset(pattern, SIZE, SIZE, 64, training=True, seed=3)))
    np.testing.assert_array_equal(batch["image_a"].numpy(), again["image_a"].numpy())
    targets = batch["target"].numpy()
    assert 10 < targets.sum() < 54  # both orders occur
    left = lambda im: bool((im[:, : SIZE // 4, 0] == 200).all())
    right = lambda im: bool((im[:, -SIZE // 4:, 0] == 200).all())
    flips = 0
    # the marker image is A exactly when the target is 1; flipped or not, it is never both
    for image_a, image_b, target in zip(batch["image_a"].numpy(), batch["image_b"].numpy(), targets):
        marked = image_a if target == 1 else image_b
        assert left(marked) != right(marked)
        flips += right(marked)
    assert 5 < flips < 59
    plain = next(iter(data.pair_dataset(pattern, SIZE, SIZE, 64, training=False)))
    assert plain["target"].numpy().tolist() == [1.0] * 64


def test_shift_fills_with_white_and_keeps_shape():
    image = tf.zeros([SIZE, SIZE, 3], tf.uint8)
    shifted = data._shift(image, tf.constant([0.0, 0.99]), 0.25).numpy()
    assert shifted.shape == (SIZE, SIZE, 3)
    # offsets (0, 16) of a 48-wide white-padded canvas: 8 white rows on top, 8 white columns right
    assert (shifted[:8] == 255).all() and (shifted[:, SIZE - 8:] == 255).all()
    assert (shifted[8:, : SIZE - 8] == 0).all()


# --------------------------------------------------------------------- training stage, export


@pytest.fixture(scope="module")
def trained(pairs_workdir):
    cfg = tiny_config(f"train_ranker.output={pairs_workdir / 'train_ranker'}").train_ranker
    cfg.input, cfg.images = str(pairs_workdir / "pairs"), str(pairs_workdir / "ingest")
    cfg.truth = str(pairs_workdir / "synth" / "truth.jsonl")
    paths = train_ranker.run(cfg)
    return cfg, paths


def test_training_writes_metrics_model_logs_and_config(trained):
    cfg, paths = trained
    metrics = json.loads(open(paths["metrics"]).read())
    assert metrics["steps"] == 3
    assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0 and metrics["test_pairs"] > 0
    assert -1.0 <= metrics["kendall_tau"] <= 1.0 and metrics["truth_images"] > 3
    assert json.loads(open(paths["config"]).read())["small_width"] == 4
    card = serving.read_model_card(paths["saved_model"], "ranker")
    assert card["config"]["backbone"] == "small" and card["image_size"] == SIZE and card["data_fingerprint"]
    event_files = [f for _, _, files in os.walk(paths["logs"]) for f in files if "tfevents" in f]
    assert event_files


def test_truth_metrics_are_one_when_truth_equals_the_scores(trained, tmp_path):
    cfg, paths = trained
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("small", "none", SIZE, 4))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    ranker.load_weights(paths["weights"])
    rows = []
    for batch in data.post_dataset(os.path.join(cfg.images, "test-*.tfrecord.gz"), SIZE, 16):
        for pid, s in zip(batch["post_id"].numpy(), ranker(tf.cast(batch["image"], tf.float32) / 255.0).numpy()):
            rows.append({"post_id": pid.decode(), "intrinsic": float(s)})
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = train_ranker._truth_metrics(ranker, cfg.images, SIZE, str(truth), 16)
    assert metrics["kendall_tau"] == pytest.approx(1.0) and metrics["spearman"] == pytest.approx(1.0)
    assert metrics["truth_images"] == len(rows)


def test_rerun_resumes_from_the_checkpoint_and_continues_the_step_count(trained, caplog):
    cfg, paths = trained
    cfg.epochs = 2
    train_ranker.run(cfg)
    err = caplog.text
    assert "resuming from" in err and "at step 3 of 6" in err
    assert json.loads(open(paths["metrics"]).read())["steps"] == 6
    cfg.epochs = 1


def test_resuming_under_another_precision_stops_and_keeps_checkpoints_and_config(trained):
    cfg, paths = trained
    before = sorted(os.listdir(paths["checkpoints"]))
    # float16 wraps both optimizers in a LossScaleOptimizer: the float32 checkpoint no longer fits.
    cfg.mixed_precision = "float16"
    try:
        with pytest.raises(training.CheckpointMismatchError, match="mixed_precision: 'none' -> 'float16'"):
            train_ranker.run(cfg)
    finally:
        cfg.mixed_precision = "none"
    assert sorted(os.listdir(paths["checkpoints"])) == before
    assert json.loads(open(paths["config"]).read())["mixed_precision"] == "none"


def test_killed_training_resumes_from_its_last_checkpoint(pairs_workdir, tmp_path):
    output = tmp_path / "killed"
    sets = [f"--set={s}" for s in ["train_ranker.epochs=1", "train_ranker.steps_per_epoch=400",
                                   "train_ranker.checkpoint_every=2", "train_ranker.backbone=small",
                                   "train_ranker.small_width=4", "train_ranker.image_size=32",
                                   "train_ranker.batch_size=4", "train_ranker.weights=none",
                                   f"train_ranker.output={output}"]]
    command = [sys.executable, "-m", "pop_tf.train", "ranker", "--workdir", str(pairs_workdir), *sets]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoints = output / "checkpoints"
    while time.time() < deadline:
        steps = [int(n.split("-")[1].split(".")[0]) for n in os.listdir(checkpoints)
                 if n.startswith("ckpt-") and n.endswith(".index")] if checkpoints.exists() else []
        if steps and max(steps) >= 4:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert steps and max(steps) >= 4, "no checkpoint appeared before the deadline"
    # The manager records a checkpoint only after its files are complete, so a kill between the
    # two leaves the newest files unrecorded: the recorded one is where training must go on.
    killed_at = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
    assert killed_at >= max(steps) - 2
    result = subprocess.run([*command[:-len(sets)], *sets[:1], "--set=train_ranker.steps_per_epoch=" + str(killed_at + 2),
                             *sets[2:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stderr
    resumed_at = int(result.stderr.split("at step ")[1].split(" ")[0])
    assert resumed_at == killed_at
    assert json.loads((output / "metrics.json").read_text())["steps"] == killed_at + 2


def test_mixed_precision_training_resumes_and_exports_float32_scores(pairs_workdir, tmp_path, caplog):
    cfg = tiny_config(f"train_ranker.output={tmp_path / 'mixed'}", "train_ranker.mixed_precision=float16").train_ranker
    cfg.input, cfg.images = str(pairs_workdir / "pairs"), str(pairs_workdir / "ingest")
    paths = train_ranker.run(cfg)
    assert keras.config.dtype_policy().name == "float32"  # restored for the stages that follow
    # A LossScaleOptimizer skips (and does not count) a step whose float16 gradients overflowed.
    first = json.loads(open(paths["metrics"]).read())["steps"]
    assert 1 <= first <= 3
    cfg.epochs = 2
    train_ranker.run(cfg)
    assert f"at step {first} of 6" in caplog.text
    loaded = tf.saved_model.load(paths["saved_model"])  # kept alive: its functions use its variables
    scores = loaded.score(np.zeros([2, SIZE, SIZE, 3], np.uint8))["score"]
    assert scores.dtype == tf.float32 and np.all(np.isfinite(scores.numpy()))


def test_nan_loss_stops_with_step_loss_name_and_checkpoint(pairs_workdir, tmp_path):
    cfg = tiny_config(f"train_ranker.output={tmp_path / 'nan'}", "train_ranker.head_learning_rate=1e38",
                      "train_ranker.backbone_learning_rate=1e38", "train_ranker.steps_per_epoch=6").train_ranker
    cfg.input, cfg.images = str(pairs_workdir / "pairs"), str(pairs_workdir / "ingest")
    with pytest.raises(training.TrainingDivergedError, match=r"'loss' became NaN or infinite at step \d+"):
        train_ranker.run(cfg)
    assert not (tmp_path / "nan" / "saved_model").exists()


def test_missing_pairs_folder_is_one_sentence(tmp_path):
    cfg = config_lib.RankerConfig(input=str(tmp_path / "nope"), output=str(tmp_path / "out"))
    with pytest.raises(train_ranker.RankerInputError, match="not a pairs output folder"):
        train_ranker.run(cfg)


_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    images = np.load(sys.argv[2])
    out = {"score": model.score(images)["score"].numpy().tolist(),
           "signature": model.signatures["score"](images=tf.constant(images))["score"].numpy().tolist(),
           "jpeg": model.score_jpeg(tf.constant([open(sys.argv[3], "rb").read()]))["score"].numpy().tolist(),
           "pop_tf_loaded": "pop_tf" in sys.modules}
    import tensorflow_hub as hub  # every exported SavedModel also loads with hub.load (docs/savedmodels.md)
    via_hub = hub.load(sys.argv[1])  # held: a loaded model's functions need its variables alive
    out["hub"] = via_hub.score(images)["score"].numpy().tolist()
    errors = {}
    for name, bad in {"empty": np.zeros((0, 8, 8, 3), np.uint8), "channels": np.zeros((1, 8, 8, 2), np.uint8),
                      "rank": np.zeros((8, 8, 3), np.uint8)}.items():
        try:
            model.score(bad)
        except tf.errors.InvalidArgumentError as e:
            errors[name] = e.message
    try:
        model.signatures["score"](images=tf.zeros((1, 8, 8, 3), tf.float32))
    except Exception as e:
        errors["dtype"] = str(e)
    out["errors"] = errors
    print(json.dumps(out))
""")


def test_saved_model_in_a_fresh_process_matches_the_keras_model(trained, tmp_path):
    cfg, paths = trained
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("small", "none", SIZE, 4))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    ranker.load_weights(paths["weights"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, "PNG")
    (tmp_path / "image.png").write_bytes(buffer.getvalue())
    script = tmp_path / "client.py"
    script.write_text(_FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script), paths["saved_model"], str(tmp_path / "images.npy"),
                             str(tmp_path / "image.png")], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert not out["pop_tf_loaded"]
    expected = ranker(images.astype(np.float32) / 255.0).numpy()
    np.testing.assert_allclose(out["score"], expected, atol=1e-4)
    np.testing.assert_allclose(out["signature"], expected, atol=1e-4)
    np.testing.assert_allclose(out["hub"], expected, atol=1e-4)
    np.testing.assert_allclose(out["jpeg"], expected[:1], atol=1e-4)
    assert "got an empty batch" in out["errors"]["empty"]
    assert "got a different channel count" in out["errors"]["channels"]
    assert "got a different rank" in out["errors"]["rank"]
    assert "uint8" in out["errors"]["dtype"]


def test_saved_model_fits_other_sizes_like_ingest(trained):
    _, paths = trained
    model = tf.saved_model.load(paths["saved_model"])
    # a wide white image with a black square: fitted into the square, it equals the padded version
    wide = np.full((1, SIZE, 2 * SIZE, 3), 255, np.uint8)
    wide[:, 8:24, 24:40] = 0
    square = np.full((1, SIZE, SIZE, 3), 255, np.uint8)
    square[:, 12:20, 12:20] = 0
    np.testing.assert_allclose(model.score(wide)["score"].numpy(), model.score(square)["score"].numpy(), atol=2e-2)


# ---------------------------------------------------------------------------------- score stage


def test_thresholds_and_domains_by_hand():
    cfg = config_lib.ScoreConfig(unpopular_quantile=0.25, popular_quantile=0.75)
    assert score.thresholds([0.0, 1.0, 2.0, 3.0, 4.0], cfg) == (1.0, 3.0)
    assert [score.domain_of(s, 1.0, 3.0) for s in (0.5, 1.0, 2.0, 3.0, 9.0)] == \
        ["unpopular", "unpopular", "", "popular", "popular"]
    assert score.thresholds([5.0], config_lib.ScoreConfig(threshold=0.5)) == (0.5, 0.5)
    assert score.domain_of(0.5, 0.5, 0.5) == "popular"
    with pytest.raises(config_lib.ConfigError, match="score.unpopular_quantile"):
        score.thresholds([1.0], config_lib.ScoreConfig(unpopular_quantile=0.8, popular_quantile=0.2))


def test_score_stage_scores_every_image_with_the_saved_model(trained, pairs_workdir, tmp_path):
    _, paths = trained
    cfg = config_lib.ScoreConfig(input=str(pairs_workdir / "ingest"), model=paths["saved_model"],
                                 output=str(tmp_path / "score"), batch_size=16)
    out = score.run(cfg)
    ingest_stats = json.loads((pairs_workdir / "ingest" / "stats.json").read_text())
    rows = list(csv.DictReader(open(out["scores"])))
    assert len(rows) == ingest_stats["accepted"] == len({r["post_id"] for r in rows})
    model = tf.saved_model.load(paths["saved_model"])
    scored = [records.decode_scored_post(s) for s in records.iter_serialized(str(tmp_path / "score" / "*.tfrecord.gz"))]
    assert len(scored) == len(rows)
    by_id = {r["post_id"]: r for r in rows}
    first = scored[:4]
    images = np.stack([np.array(Image.open(io.BytesIO(p["image_png"])).convert("RGB")) for p in first])
    np.testing.assert_allclose([p["score"] for p in first], model.score(images)["score"].numpy(), atol=1e-4)
    for post in scored:
        assert post["domain"] == by_id[post["post_id"]]["domain"]
    stats = json.loads(open(out["stats"]).read())
    train_scores = np.array([float(r["score"]) for r in rows if r["split"] == "train"])
    low, high = np.quantile(train_scores, [0.4, 0.6])
    assert stats["thresholds"]["popular_at_or_above"] == pytest.approx(high, rel=1e-5)  # scores.csv rounds
    assert stats["counts"]["train"]["popular"] == int((train_scores >= high).sum())
    assert stats["counts"]["train"]["unpopular"] == int((train_scores <= low).sum())
    parsed = next(iter(data.post_dataset(str(tmp_path / "score" / "train-*.tfrecord.gz"), SIZE, 4, scored=True)))
    assert parsed["score"].shape == (4,) and parsed["domain"].dtype == tf.string


def test_score_refuses_a_model_of_another_kind(trained, pairs_workdir, tmp_path):
    _, paths = trained
    other = tmp_path / "other"
    other.mkdir()
    serving.write_model_card(str(other), "clusterer", {}, "")
    cfg = config_lib.ScoreConfig(input=str(pairs_workdir / "ingest"), model=str(other), output=str(tmp_path / "s"))
    with pytest.raises(Exception, match="holds a 'clusterer' model, but a 'ranker' model is needed"):
        score.run(cfg)


# ------------------------------------------------------------------- input preprocessing per weights


def _randomised_batch_norm(model, seed):
    """Moving statistics and affine parameters drawn at random (a trained network's are not 0 and 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.0, channels), rng.uniform(-0.1, 0.1, channels),
                               rng.uniform(-0.1, 0.1, channels), rng.uniform(1.0, 2.0, channels)])


def test_keras_imagenet_resnet50_weights_score_through_keras_preprocessing(tmp_path):
    # Keras's ImageNet ResNet50 (random weights: no downloads) saved as a weights file, as
    # `weights=imagenet` or `weights=<Keras weights file>` gets it.
    keras.utils.set_random_seed(7)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg")
    _randomised_batch_norm(reference, seed=7)
    path = str(tmp_path / "resnet50_keras.weights.h5")
    reference.save_weights(path)
    assert ranker_lib.default_input_preprocessing("resnet50", "imagenet") == "caffe"
    assert ranker_lib.default_input_preprocessing("resnet50", path) == "caffe"
    ranker = ranker_lib.build_ranker("resnet50", path, 64)
    assert ranker.input_preprocessing == "caffe" and ranker.get_config()["input_preprocessing"] == "caffe"
    rng = np.random.default_rng(7)
    ranker.head.set_weights([rng.normal(0, 0.05, (2048, 1)).astype(np.float32), np.float32([0.3])])
    images = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    # keras.applications with its own preprocessing: 0..255 RGB → preprocess_input → the network.
    features = reference(keras.applications.resnet50.preprocess_input(images.astype(np.float32)), training=False)
    kernel, bias = ranker.head.get_weights()
    expected = (np.asarray(features) @ kernel + bias)[:, 0]
    scores = ranker(images.astype(np.float32) / 255.0).numpy()
    print(f"max |pop_tf - keras.applications| = {np.abs(scores - expected).max():.2e} over scores {expected}")
    assert np.std(expected) > 1e-2
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    logits = ranker_lib.pairwise_logits(ranker, images[:2], images[2:], training=False)
    np.testing.assert_allclose(logits.numpy(), expected[:2] - expected[2:], atol=2e-4)
    # The unit input would be another function of the same weights.
    unit = ranker_lib.PopularityRanker(ranker.backbone, input_preprocessing="unit")
    unit(tf.zeros([1, 64, 64, 3]))
    unit.head.set_weights(ranker.head.get_weights())
    assert np.abs(unit(images.astype(np.float32) / 255.0).numpy() - expected).max() > 1e-2
    clone = ranker_lib.PopularityRanker.from_config(ranker.get_config())
    assert clone.input_preprocessing == "caffe"


def test_small_backbone_random_and_hub_weights_keep_unit_input():
    for backbone, weights in (("small", "none"), ("resnet50", "none"), ("resnet50", "hub:/some/module")):
        assert ranker_lib.default_input_preprocessing(backbone, weights) == "unit"
    ranker = ranker_lib.build_ranker("small", "none", SIZE, small_width=4)
    assert ranker.input_preprocessing == "unit"
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype(np.float32)
    direct = tf.squeeze(ranker.head(ranker.backbone(images)), -1)
    np.testing.assert_allclose(ranker(images).numpy(), direct.numpy(), atol=1e-6)
    # A config without the key (a ranker saved before it existed) loads as [0, 1] input.
    config = ranker.get_config()
    del config["input_preprocessing"]
    assert ranker_lib.PopularityRanker.from_config(config).input_preprocessing == "unit"
    with pytest.raises(ValueError, match="input_preprocessing must be one of unit, caffe"):
        ranker_lib.build_ranker("small", "none", SIZE, small_width=4, input_preprocessing="torch")


def test_exported_saved_model_and_keras_file_carry_the_preprocessing(tmp_path):
    keras.utils.set_random_seed(3)
    caffe = ranker_lib.build_ranker("small", "none", SIZE, small_width=4, input_preprocessing="caffe")
    images = np.random.default_rng(3).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
    expected = caffe(images.astype(np.float32) / 255.0).numpy()
    unit = ranker_lib.PopularityRanker(caffe.backbone, input_preprocessing="unit")
    unit(tf.zeros([1, SIZE, SIZE, 3]))
    unit.head.set_weights(caffe.head.get_weights())
    assert np.abs(unit(images.astype(np.float32) / 255.0).numpy() - expected).max() > 1e-3
    exported = serving.export_ranker(caffe, str(tmp_path / "saved_model"), {}, "")
    served = tf.saved_model.load(exported)  # held: a dropped SavedModel's variables are freed
    np.testing.assert_allclose(served.score(images)["score"].numpy(), expected, atol=1e-5)
    caffe.save(str(tmp_path / "ranker.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "ranker.keras"))
    assert loaded.input_preprocessing == "caffe"
    np.testing.assert_allclose(loaded(images.astype(np.float32) / 255.0).numpy(), expected, atol=1e-5)
    # weights=<ranker .keras>: the whole ranker (head included) and its preprocessing, at another size.
    rebuilt = ranker_lib.build_ranker("small", str(tmp_path / "ranker.keras"), SIZE, small_width=8)
    assert rebuilt.input_preprocessing == "caffe"
    np.testing.assert_allclose(rebuilt(images.astype(np.float32) / 255.0).numpy(), expected, atol=1e-5)
    assert ranker_lib.build_ranker("small", str(tmp_path / "ranker.keras"), 2 * SIZE).image_size == 2 * SIZE
