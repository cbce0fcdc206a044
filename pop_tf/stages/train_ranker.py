"""The `train_ranker` stage: the siamese popularity ranker trained on PDIPs with `fit()`.

Reads `<pairs>/train_pairs-*` (training) and `<pairs>/test_pairs-*` (held-out pairs), writes into
the output folder:
- `checkpoints/` — `tf.train.CheckpointManager` every `checkpoint_every` steps; a rerun restores
  the newest readable checkpoint and continues its step count (a corrupt newest checkpoint falls
  back to the one before);
- `saved_model/` — the ranker SavedModel (`score`, `score_jpeg`, `pop_tf.json`; docs/savedmodels.md),
  which the score stage uses and the export stage versions;
- `metrics.json` — held-out `pairwise_accuracy` and loss, and, where a truth file exists,
  `kendall_tau` and `spearman` between scores and the hidden intrinsic popularity of the
  held-out images (`<ingest>/test-*`), all of the shipped weights; `selected_epoch`,
  `selected_step` and `epochs_held_out` (each epoch's held-out accuracy and loss);
- `best_epoch/` — with `select_epoch=best`, the weights of the epoch with the best held-out
  pairwise accuracy (ties: lower held-out loss) and `best.json`; the SavedModel, the weights file
  and metrics.json are of that epoch, the checkpoints of the last step (what a rerun resumes);
- `config.json` — the resolved config.
TensorBoard logs (loss, pairwise accuracy, learning rates, scored held-out images) go to
`<workdir>/logs/train_ranker` unless `logdir` says otherwise. A NaN/Inf loss stops training with
the step, the loss name and the last good checkpoint named.

`mixed_precision` (`none`, `float16`, `bfloat16` or `auto`, see `pop_tf.precision`) builds the
ranker's backbone under that policy (float32 score head; float16 adds a `LossScaleOptimizer` per
optimizer); `auto` is resolved before config.json is written, so the file and metrics.json name
the policy used. `jit_compile` XLA-compiles the train step (docs/performance.md). A checkpoint
resumes only under the architecture it was written with, and a float16 one only under float16
(its optimizers are wrapped); otherwise the run stops before training, naming the settings that
changed since the run that wrote it (nothing is overwritten).

`distribute` (`none`, `mirrored`, `multi_worker`, `tpu`; `pop_tf.distribution`) trains under that
`tf.distribute` strategy: `batch_size` is the global batch, split over the replicas; the loss is
divided by the number of replicas (their gradients are summed) and the backbone's batch norm
takes its statistics over the global batch, so a step on R replicas is the step on one. Under
`multi_worker` only the chief writes the files above; every worker resumes from its checkpoints.
"""

import dataclasses
import json
import logging
import math
import os
import sys
import time

from pop_tf import config as config_lib
from pop_tf import layout, precision
from pop_tf.errors import PopTfError
from pop_tf.paths import check_stage

STAGE = "train_ranker"
METRICS = "metrics.json"
BEST_EPOCH = "best_epoch"

log = logging.getLogger(__name__)


class RankerInputError(PopTfError):
    """The pairs or images the ranker needs are missing."""


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _summaries(trainer, logdir, preview):
    """Learning rates and the held-out preview images sorted by score, once per epoch."""
    import keras
    import numpy as np
    import tensorflow as tf

    from pop_tf import training

    class Summaries(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.writer = tf.summary.create_file_writer(os.path.join(logdir, "images"))

        def on_epoch_end(self, epoch, logs=None):
            step = training.as_number(trainer.backbone_optimizer.iterations)
            with self.writer.as_default(step=step):
                tf.summary.scalar("learning_rate/backbone", training.as_number(trainer.backbone_optimizer.learning_rate, float))
                tf.summary.scalar("learning_rate/head", training.as_number(trainer.head_optimizer.learning_rate, float))
                if preview is not None:
                    scores = trainer.ranker(tf.cast(preview, tf.float32) / 255.0).numpy()
                    order = np.argsort(-scores)
                    tf.summary.image("held_out_by_score (highest first)", preview[order],
                                     max_outputs=len(order), step=step,
                                     description="scores: " + ", ".join(f"{s:.2f}" for s in scores[order]))

    return Summaries()


def _optimizer(cfg, learning_rate: float, total_steps: int):
    """Adam (AdamW with weight decay), in a LossScaleOptimizer under mixed precision."""
    import keras

    if cfg.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    if cfg.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    return precision.loss_scaled(optimizer, cfg.mixed_precision)


def _truth_metrics(ranker, images_dir: str, stored_size: int, truth_path: str, batch_size: int) -> dict:
    """Kendall τ and Spearman ρ between scores and hidden intrinsic popularity (held-out images)."""
    import numpy as np
    import tensorflow as tf
    from scipy import stats

    from pop_tf import data
    from pop_tf.truth import read_truth

    truth = read_truth(truth_path)
    scores, intrinsic = [], []
    dataset = data.post_dataset(layout.shard_pattern(images_dir, "test"), stored_size, batch_size,
                                image_size=ranker.image_size)
    for batch in dataset:
        batch_scores = ranker(tf.cast(batch["image"], tf.float32) / 255.0).numpy()
        for post_id, score in zip(batch["post_id"].numpy(), batch_scores):
            if post_id.decode() in truth:
                scores.append(float(score))
                intrinsic.append(truth[post_id.decode()])
    if len(scores) < 3:
        return {"truth_images": len(scores)}
    tau = stats.kendalltau(scores, intrinsic).statistic
    rho = stats.spearmanr(scores, intrinsic).statistic
    return {"kendall_tau": float(tau), "spearman": float(rho), "truth_images": len(scores),
            "score_mean": float(np.mean(scores)), "score_std": float(np.std(scores))}


def _preview_images(images_dir, stored_size, image_size, count):
    from pop_tf import data

    if count == 0:
        return None
    batch = next(iter(data.post_dataset(layout.shard_pattern(images_dir, "test"), stored_size, count,
                                        image_size=image_size)))
    return batch["image"].numpy()


def run(cfg: config_lib.RankerConfig) -> dict:
    """Trains (or resumes) the ranker; returns the artifact paths."""
    if not cfg.input or not cfg.output:
        raise config_lib.ConfigError("train_ranker needs 'train_ranker.input' (a pairs folder) and "
                                     "'train_ranker.output'")
    check_stage(STAGE, cfg)
    stats_path = os.path.join(cfg.input, layout.STATS)
    if not os.path.isfile(stats_path):
        raise RankerInputError(f"{cfg.input} is not a pairs output folder (no stats.json); run `pop-tf pairs` first")
    pair_stats = _read_json(stats_path)
    if int(pair_stats["pairs"]["train"]) == 0:
        raise RankerInputError(f"{cfg.input} holds no training pairs; loosen the pair rule "
                               "(pairs.min_log_margin, pairs.window_days) or bring more posts per user")
    images_dir = cfg.images or pair_stats.get("input", "")
    if cfg.truth and not os.path.isfile(cfg.truth):
        raise RankerInputError(f"train_ranker.truth: {cfg.truth} does not exist (leave it empty when the "
                               "dataset has no truth file)")
    for key in ("dropout", "label_smoothing"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise config_lib.ConfigError(f"config key 'train_ranker.{key}': {getattr(cfg, key)!r} must be in [0, 1)")

    from pop_tf import distribution

    cfg = dataclasses.replace(cfg, mixed_precision=precision.resolve(cfg.mixed_precision))
    strategy = distribution.make_strategy(cfg.distribute, STAGE)
    with distribution.worker_output(cfg.output, strategy, STAGE) as output:
        return _train(cfg, strategy, output, pair_stats, stats_path, images_dir)


def build_trainer(cfg: config_lib.RankerConfig, total_steps: int, strategy):
    """The ranker and its compiled `SiameseRankerTrainer`, variables and optimizer slots built
    under `strategy.scope()` (weights drawn from `cfg.seed`)."""
    import keras

    from pop_tf.models import ranker as ranker_lib

    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        ranker = ranker_lib.build_ranker(cfg.backbone, cfg.weights, cfg.image_size, cfg.small_width,
                                         mixed_precision=cfg.mixed_precision, dropout=cfg.dropout)
        if strategy.num_replicas_in_sync > 1:
            ranker_lib.synchronize_batch_norm(ranker)
        trainer = ranker_lib.SiameseRankerTrainer(ranker, label_smoothing=cfg.label_smoothing)
        trainer.compile(_optimizer(cfg, cfg.backbone_learning_rate, total_steps),
                        _optimizer(cfg, cfg.head_learning_rate, total_steps), jit_compile=cfg.jit_compile)
        trainer.build_optimizers()
    return ranker, trainer


def _train(cfg, strategy, output: str, pair_stats: dict, stats_path: str, images_dir: str) -> dict:
    import keras
    import tensorflow as tf

    from pop_tf import data, distribution, serving, training

    started = time.monotonic()
    stored_size, num_train = int(pair_stats["image_size"]), int(pair_stats["pairs"]["train"])
    chief = distribution.is_chief(strategy)
    logdir = (cfg.logdir or os.path.join(os.path.dirname(os.path.abspath(cfg.output)), "logs", STAGE)) if chief \
        else os.path.join(output, "logs")
    steps_per_epoch = cfg.steps_per_epoch or max(1, num_train // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    ranker, trainer = build_trainer(cfg, total_steps, strategy)
    step = lambda: trainer.backbone_optimizer.iterations  # noqa: E731

    def train(start_step):
        return data.pair_dataset(layout.pair_shard_pattern(cfg.input, "train"), stored_size, cfg.image_size,
                                 cfg.batch_size, training=True, seed=cfg.seed + start_step, flip=cfg.flip,
                                 max_shift=cfg.max_shift, shuffle_buffer=cfg.shuffle_buffer)

    test_pattern = layout.pair_shard_pattern(cfg.input, "test")
    has_test = int(pair_stats["pairs"].get("test", 0)) > 0
    test = data.pair_dataset(test_pattern, stored_size, cfg.image_size, cfg.batch_size, training=False) \
        if has_test else None
    preview = _preview_images(images_dir, stored_size, cfg.image_size, cfg.num_logged_images) \
        if images_dir and tf.io.gfile.glob(layout.shard_pattern(images_dir, "test")) else None
    selection = None
    if cfg.select_epoch == "best" and has_test:
        selection = training.BestEpoch(tf.train.Checkpoint(ranker=ranker), os.path.join(output, BEST_EPOCH), step,
                                       "val_pairwise_accuracy", "max", tie_breaker="val_loss")
    elif cfg.select_epoch == "best":
        log.warning("train_ranker: no held-out pairs to select an epoch by; the last epoch's weights are kept")
    tensorboard = keras.callbacks.TensorBoard(logdir, update_freq=max(1, cfg.checkpoint_every // 4))
    # `selection` right after the checkpointing callback: the last step is checkpointed before
    # the best epoch is loaded.
    callbacks = [*([selection] if selection else []), _summaries(trainer, logdir, preview), tensorboard]
    test_steps = math.ceil(int(pair_stats["pairs"].get("test", 0)) / cfg.batch_size) or None
    fitted = training.fit_resumable(
        trainer, train, cfg, callbacks, stage=STAGE, output=output, resume_from=cfg.output, strategy=strategy,
        checkpoint=dict(ranker=ranker, backbone_optimizer=trainer.backbone_optimizer,
                        head_optimizer=trainer.head_optimizer),
        step=step, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, validation_data=test,
        validation_steps=test_steps, hint="Lower train_ranker.backbone_learning_rate/head_learning_rate")
    final_step, best = fitted.step, fitted.best

    metrics = {"steps": final_step, "train_pairs": num_train, "select_epoch": cfg.select_epoch if best else "last",
               "mixed_precision": cfg.mixed_precision}
    if best:
        metrics.update({"selected_epoch": best["epoch"], "selected_step": best["step"],
                        "epochs_held_out": [{"epoch": h["epoch"], "pairwise_accuracy": h["value"], "loss": h["tie"]}
                                            for h in best["history"]]})
        log.info("train_ranker: selected epoch %d (step %d of %d): held-out pairwise accuracy %.3f, loss %.3f; "
                 "per epoch: %s", best["epoch"], best["step"], final_step, best["value"], best["tie"],
                 ", ".join(f"{h['epoch']}: {h['value']:.3f}" for h in best["history"]))
    else:
        metrics["selected_epoch"] = max(1, math.ceil(final_step / steps_per_epoch))
    if test is not None:
        evaluation = trainer.evaluate(test, steps=test_steps, verbose=0, return_dict=True)
        metrics.update({"pairwise_accuracy": float(evaluation["pairwise_accuracy"]),
                        "test_loss": float(evaluation["loss"]), "test_pairs": int(pair_stats["pairs"]["test"])})
    if cfg.truth and images_dir:
        metrics.update(_truth_metrics(ranker, images_dir, stored_size, cfg.truth, cfg.batch_size))
    saved_model = serving.export_ranker(ranker, os.path.join(output, "saved_model"),
                                        config_lib.to_dict(cfg), serving.file_fingerprint(stats_path), metrics=metrics)
    ranker.save_weights(os.path.join(output, "ranker.weights.h5"))
    metrics["seconds"] = round(time.monotonic() - started, 1)
    metrics_path = os.path.join(output, METRICS)
    with open(metrics_path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    os.replace(metrics_path + ".tmp", metrics_path)
    summary = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()
                        if k in ("pairwise_accuracy", "kendall_tau", "spearman"))
    chosen = f"epoch {metrics['selected_epoch']} selected" if best else "last epoch kept"
    print(f"train_ranker: {final_step} steps ({cfg.mixed_precision} precision), {chosen}; held-out {summary}; SavedModel in {saved_model}",
          file=sys.stderr)
    return {"metrics": metrics_path, "saved_model": saved_model, "checkpoints": fitted.checkpoints,
            "weights": os.path.join(output, "ranker.weights.h5"), "logs": logdir,
            "config": os.path.join(output, layout.CONFIG)}


def main(argv=None) -> int:
    from pop_tf import train
    return train.run_trainer(argv, "ranker", STAGE, run)
