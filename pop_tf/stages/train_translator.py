"""The `train_translator` stage: the translation GAN trained with `fit()`.

`model="pix2pix"` (built): Suzuki et al.'s cluster-conditioned edge map → colour garment GAN
(`pop_tf.models.pix2pix`), with `diversity` = none | ms | clusters on the same networks. It reads
the posts' edge maps and images (`<input>/train-*.tfrecord.gz`), and for `clusters` the cluster
stage's statistics, assignments and exact feature extractor E (`<clusters>/`). Without cluster
conditioning (none, ms) the networks get a single constant cluster, which is the same as none.
`model="dmit"` is the popularity translator of issue #6 and is refused until it lands.

Writes into the output folder: `checkpoints/` (every `checkpoint_every` steps; a rerun resumes
the newest readable one), `generator.weights.h5`, `samples.png` (one row per cluster, one
column per held-out edge map, the same z), `metrics.json` (the diversity of `eval_samples`
outputs for each of `eval_inputs` held-out edge maps: mean pairwise L1 in [0, 2] ± standard
error, and the L1 of one sample to the real image) and `config.json`. TensorBoard scalars of every
loss and the sample grid per epoch go to `<workdir>/logs/train_translator`.
"""

import json
import os
import sys
import time

from pop_tf import config as config_lib
from pop_tf.errors import PopTfError

STAGE = "train_translator"
METRICS = "metrics.json"
SAMPLES = "samples.png"


class TranslatorError(PopTfError):
    """The translator's inputs are missing, or the chosen model is not available."""


class ModelNotBuiltError(TranslatorError):
    """A model option that names a network which has not landed yet (a usage error)."""

    exit_code = 2


def _stored_size(input_dir: str) -> tuple:
    """(image size, train count) of an ingest or score output folder, from its stats.json."""
    try:
        with open(os.path.join(input_dir, "stats.json")) as f:
            stats = json.load(f)
    except OSError:
        raise TranslatorError(f"{input_dir} has no stats.json; pass a score or ingest output folder as "
                              "train_translator.input") from None
    if "per_split" in stats:  # ingest
        return int(stats["image_size"]), int(stats["per_split"].get("train", 0))
    return int(stats["image_size"]), sum(stats["counts"]["train"].values())  # score


def _held_out(input_dir: str, stored_size: int, image_size: int, count: int):
    """The first `count` held-out (test, else train) posts: edges, images in [−1, 1], post ids."""
    import tensorflow as tf

    from pop_tf import data

    for split in ("test", "train"):
        pattern = os.path.join(input_dir, f"{split}-*.tfrecord.gz")
        if tf.io.gfile.glob(pattern):
            batch = next(iter(data.post_dataset(pattern, stored_size, count, image_size=image_size)))
            return data.to_signed_unit(batch["edge"]), data.to_signed_unit(batch["image"])
    raise TranslatorError(f"no post records in {input_dir}")


def sample_grid(trainer, edges, seed: int):
    """uint8 [K·S, (E+1)·S, 3]: the edge maps on top, then one row per cluster, the same z."""
    import numpy as np
    import tensorflow as tf

    rows = [edges]
    for cluster in range(trainer.num_clusters):
        images, _ = trainer.sample(edges, clusters=cluster, seed=seed, num_samples=1)
        rows.append(images[:, 0])
    grid = tf.concat([tf.concat(tf.unstack(row), axis=1) for row in rows], axis=0)
    return np.asarray(tf.cast(tf.round((grid + 1.0) * 127.5), tf.uint8))


def l1_distance(images_a, images_b):
    """Per-pair mean absolute difference of images in [−1, 1] (a [0, 2] distance)."""
    import numpy as np
    return np.abs(np.asarray(images_a, np.float32) - np.asarray(images_b, np.float32)).mean(axis=(1, 2, 3))


def _build_pix2pix(cfg, num_clusters, extractor, stats, total_steps):
    import keras

    from pop_tf.models import pix2pix

    keras.utils.set_random_seed(cfg.seed)
    generator = pix2pix.UNetGenerator(cfg.image_size, base_filters=cfg.base_filters, num_clusters=num_clusters,
                                      noise_dim=cfg.noise_dim)
    discriminator = pix2pix.MultiScaleDiscriminator(num_scales=cfg.num_scales, base_filters=cfg.base_filters,
                                                    num_layers=cfg.discriminator_layers, num_clusters=num_clusters)
    cluster_args = {}
    if cfg.diversity == "clusters":
        # E sees G's [−1, 1] images as the [0, 255] pixels it was fitted on.
        cluster_args = dict(feature_extractor=lambda images: extractor((images + 1.0) * 127.5),
                            cluster_means=stats.means, inverse_covariances=stats.inverse_covariances,
                            feature_masks=stats.masks, cluster_shares=stats.shares)
    return pix2pix.ClusterPix2Pix(
        generator, discriminator, diversity=cfg.diversity, lambda_l1=cfg.lambda_l1, lambda_ms=cfg.lambda_ms,
        lambda_d=cfg.lambda_d, lambda_m=cfg.lambda_m, seed=cfg.seed,
        mahalanobis_warmup_steps=int(round(cfg.mahalanobis_warmup * total_steps)), **cluster_args)


def run(cfg: config_lib.TranslatorConfig) -> dict:
    """Trains (or resumes) the translator; returns the artifact paths."""
    if cfg.model == "dmit":
        raise ModelNotBuiltError("train_translator.model=dmit (the popularity translator) is not built yet "
                              "(issue #6); train the cluster-conditioned GAN with model=pix2pix")
    if not cfg.input or not cfg.output:
        raise config_lib.ConfigError("train_translator needs 'train_translator.input' (a score or ingest folder) "
                                     "and 'train_translator.output'")
    if cfg.diversity == "clusters" and not cfg.clusters:
        raise config_lib.ConfigError("train_translator.diversity=clusters needs 'train_translator.clusters' "
                                     "(a cluster output folder)")
    stored_size, num_train = _stored_size(cfg.input)
    if num_train < cfg.batch_size:
        raise TranslatorError(f"{cfg.input} holds {num_train} training posts, fewer than one batch "
                              f"(train_translator.batch_size={cfg.batch_size})")

    import keras
    import tensorflow as tf
    from PIL import Image

    from pop_tf import data, training
    from pop_tf.metrics import lpips
    from pop_tf.stages import cluster

    started = time.monotonic()
    stats = extractor = cluster_of = None
    num_clusters = 1
    if cfg.diversity == "clusters":
        stats, cluster_of, extractor = cluster.load_outputs(cfg.clusters)
        num_clusters = stats.num_clusters
    os.makedirs(cfg.output, exist_ok=True)
    config_lib.write_resolved(cfg, cfg.output)
    logdir = cfg.logdir or os.path.join(os.path.dirname(os.path.abspath(cfg.output)), "logs", STAGE)
    steps_per_epoch = cfg.steps_per_epoch or max(1, num_train // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch

    trainer = _build_pix2pix(cfg, num_clusters, extractor, stats, total_steps)
    schedule = lambda: training.ConstantThenLinearDecay(cfg.learning_rate, total_steps,
                                                        min(cfg.decay_epochs, cfg.epochs) * steps_per_epoch)
    trainer.compile(keras.optimizers.Adam(schedule(), beta_1=cfg.beta_1, beta_2=cfg.beta_2),
                    keras.optimizers.Adam(schedule(), beta_1=cfg.beta_1, beta_2=cfg.beta_2))
    checkpoint = tf.train.Checkpoint(model=trainer, g_optimizer=trainer.g_optimizer, d_optimizer=trainer.d_optimizer)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(cfg.output, "checkpoints"), max_to_keep=3)
    restored = training.restore_newest(checkpoint, manager, STAGE)
    start_step = int(trainer.g_optimizer.iterations)
    if restored:
        print(f"{STAGE}: resuming from {restored} at step {start_step} of {total_steps}", file=sys.stderr)

    train = data.edge_to_image_dataset(os.path.join(cfg.input, "train-*.tfrecord.gz"), stored_size, cfg.image_size,
                                       cfg.batch_size, seed=cfg.seed + start_step, flip=cfg.flip,
                                       cluster_of=cluster_of)
    preview_edges, _ = _held_out(cfg.input, stored_size, cfg.image_size, cfg.num_sample_edges)
    writer = tf.summary.create_file_writer(os.path.join(logdir, "samples"))

    class SampleGrid(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with writer.as_default(step=int(trainer.g_optimizer.iterations)):
                tf.summary.image("samples (edges, then one row per cluster)",
                                 sample_grid(trainer, preview_edges, cfg.seed)[None])

    control = training.TrainingCallbacks(manager, lambda: trainer.g_optimizer.iterations, cfg.checkpoint_every,
                                         total_steps)
    callbacks = [control, SampleGrid(), keras.callbacks.TensorBoard(logdir, update_freq=max(1, cfg.checkpoint_every // 4))]
    if start_step < total_steps:
        trainer.fit(train, epochs=cfg.epochs, initial_epoch=start_step // steps_per_epoch, shuffle=False,
                    steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2)
    control.raise_if_diverged(STAGE, "Lower train_translator.learning_rate")
    control.save_final()

    edges, reals = _held_out(cfg.input, stored_size, cfg.image_size, cfg.eval_inputs)
    outputs, _ = trainer.sample(edges, seed=cfg.seed + 1, num_samples=cfg.eval_samples)
    diversity = lpips.diversity(l1_distance, outputs.numpy())
    metrics = {"model": cfg.model, "diversity": cfg.diversity, "steps": int(trainer.g_optimizer.iterations),
               "diversity_l1": diversity["mean"], "diversity_l1_stderr": diversity["stderr"],
               "diversity_pairs": diversity["num_pairs"],
               "reconstruction_l1": float(l1_distance(outputs[:, 0], reals).mean()),
               "num_clusters": num_clusters, "seconds": round(time.monotonic() - started, 1)}
    Image.fromarray(sample_grid(trainer, preview_edges, cfg.seed)).save(os.path.join(cfg.output, SAMPLES))
    trainer.generator.save_weights(os.path.join(cfg.output, "generator.weights.h5"))
    metrics_path = os.path.join(cfg.output, METRICS)
    with open(metrics_path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    os.replace(metrics_path + ".tmp", metrics_path)
    print(f"{STAGE}: {cfg.model}/{cfg.diversity}: {metrics['steps']} steps; held-out diversity (mean pairwise L1) "
          f"{diversity['mean']:.4f} ± {diversity['stderr']:.4f}", file=sys.stderr)
    return {"metrics": metrics_path, "samples": os.path.join(cfg.output, SAMPLES),
            "weights": os.path.join(cfg.output, "generator.weights.h5"), "checkpoints": manager.directory,
            "logs": logdir, "config": os.path.join(cfg.output, "config.json")}


def workdir_defaults(workdir: str) -> dict:
    """Where the translator reads and writes inside a pipeline work folder."""
    return {"input": os.path.join(workdir, "score"), "clusters": os.path.join(workdir, "cluster"),
            "output": os.path.join(workdir, STAGE)}


def main(argv=None) -> int:
    from pop_tf import train
    return train.run_trainer(argv, "translator", STAGE, workdir_defaults, run)
