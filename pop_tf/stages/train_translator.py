"""The `train_translator` stage: the translation GANs trained with `fit()`.

`model="dmit"` (the popularity translator, Yu et al. 2019): one multi-domain DMIT
(`pop_tf.models.dmit_trainer.DMITTrainer`) over four domains, popularity (unpopular, popular) ×
modality (edge, color). It reads the score stage's output (`<input>/train-*.tfrecord.gz`, posts
with a popularity domain; the undecided middle is left out), each example the post's colour image
or its edge map (½ each), and pairs random examples (`pop_tf.data.domain_pair_dataset`). Records
without popularity domains (an ingest output) are refused. Writes the translator SavedModel
(`translate`, `sample`, `domains`; docs/savedmodels.md) to `<output>/saved_model/`
(`serving.export_translator`).

`model="pix2pix"`: Suzuki et al.'s cluster-conditioned edge map → colour garment GAN
(`pop_tf.models.pix2pix`) on the posts' edge maps and images of an ingest or score output.

Both take `diversity` = none | ms | clusters (`TranslatorConfig`): none is the model as
published (DMIT keeps its own diversity term), ms adds MSGAN's mode seeking (replacing DMIT's
term), clusters also reads the cluster stage's statistics, assignments and exact feature
extractor E (`<clusters>/`, `clusterer.load_cluster_outputs`); without cluster conditioning (none, ms)
pix2pix gets a single constant cluster, which is the same as none.
Both use Adam (`beta_1`, `beta_2`), constant then linear decay over the last epochs
(`pop_tf.training.ConstantThenLinearDecay`), each on its own schedule: DMIT `epochs`,
`decay_epochs`, `learning_rate` (DMIT's 100 + 100 at 1e-4); pix2pix `pix2pix_epochs`,
`pix2pix_decay_epochs`, `pix2pix_learning_rate` (Suzuki et al.'s 400 epochs without decay, at
MSGAN's 2e-4). `steps_per_epoch` fixes an epoch's length whatever the dataset's size.

Writes into the output folder: `checkpoints/` (every `checkpoint_every` steps; a rerun resumes
the newest readable one and continues its step count; a NaN/Inf loss stops with the step, the
loss and the last good checkpoint named), the weights (`generator.weights.h5` for pix2pix,
`dmit.weights.h5`, every DMIT network, for dmit), `samples.png`, `metrics.json` and
`config.json`. `samples.png` is, for pix2pix, the held-out edge maps on top and one row per
cluster (the same z); for dmit, one row per held-out post (colour image and edge map in turn)
with the columns real | rec (its own domain and style) | fake_enc (the opposite popularity in
colour, the style of a held-out post of that domain) | fake_rand (the same, a prior style).
`metrics.json`: the diversity of `eval_samples` outputs for each of `eval_inputs` held-out inputs
(mean pairwise L1 in [0, 2] ± standard error; dmit: colour images to the opposite popularity),
the L1 of one output to the real image (pix2pix) or of the reconstruction (dmit), and the last
logged losses. TensorBoard scalars of every loss, the sample grid per epoch and the run's
hyperparameters (HParams tab) go to `<output>/../logs/<output folder name>`, e.g.
`<workdir>/logs/train_translator`.

`distribute` (`none`, `mirrored`, `multi_worker`, `tpu`; `pop_tf.distribution`) trains under that
`tf.distribute` strategy, `batch_size` being the global batch; both trainers divide their
per-replica mean losses by the number of replicas and draw each replica's noise as its rows of
the global batch's draw, so a step on R replicas is the step on one (except DMIT's own
diversity term, a ratio of batch means that each replica takes over its slice). Under
`multi_worker` only the chief writes the files above.
"""

import dataclasses
import json
import os
import sys
import time

from pop_tf import config as config_lib
from pop_tf import layout, precision
from pop_tf.errors import PopTfError
from pop_tf.paths import check_stage

STAGE = "train_translator"
METRICS = "metrics.json"
SAMPLES = "samples.png"
SAVED_MODEL = "saved_model"


class TranslatorError(PopTfError):
    """The translator's inputs are missing or of the wrong kind."""


def _read_stats(input_dir: str, wanted: str) -> dict:
    try:
        with open(os.path.join(input_dir, layout.STATS)) as f:
            return json.load(f)
    except OSError:
        raise TranslatorError(f"{input_dir} has no stats.json; pass {wanted} as train_translator.input") from None


def _stored_size(input_dir: str) -> tuple:
    """(image size, train count) of an ingest or score output folder, from its stats.json."""
    stats = _read_stats(input_dir, "a score or ingest output folder")
    if "per_split" in stats:  # ingest
        return int(stats["image_size"]), int(stats["per_split"].get("train", 0))
    return int(stats["image_size"]), sum(stats["counts"]["train"].values())  # score


def _scored_input(input_dir: str) -> tuple:
    """(image size, training posts in a popularity domain) of a score output folder."""
    stats = _read_stats(input_dir, "the score stage's output (model=dmit needs popularity domains; run "
                                   "`pop-tf score` first)")
    if "thresholds" not in stats or "counts" not in stats:
        raise TranslatorError(f"train_translator.input {input_dir} holds posts without popularity domains (an "
                              "ingest output?); model=dmit needs the score stage's output, run `pop-tf score` first")
    train = stats["counts"].get("train", {})
    return int(stats["image_size"]), int(train.get("popular", 0)) + int(train.get("unpopular", 0))


def _held_out(input_dir: str, stored_size: int, image_size: int, count: int):
    """The first `count` held-out (test, else train) posts: (edges, images) in [−1, 1]."""
    import tensorflow as tf

    from pop_tf import data

    for split in ("test", "train"):
        pattern = layout.shard_pattern(input_dir, split)
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


def _cluster_args(cfg, clusters) -> dict:
    """The trainers' cluster arguments (diversity=clusters) from `clusterer.load_cluster_outputs`' result."""
    if cfg.diversity != "clusters":
        return {}
    stats, _, extractor = clusters
    # E sees G's [−1, 1] images as the [0, 255] pixels it was fitted on.
    return dict(feature_extractor=lambda images: extractor((images + 1.0) * 127.5),
                cluster_means=stats.means, inverse_covariances=stats.inverse_covariances,
                feature_masks=stats.masks, cluster_shares=stats.shares)


def _build_pix2pix(cfg, num_clusters, cluster_args, total_steps):
    import keras

    from pop_tf.models import pix2pix

    keras.utils.set_random_seed(cfg.seed)
    with precision.policy(cfg.mixed_precision):
        generator = pix2pix.UNetGenerator(cfg.image_size, base_filters=cfg.base_filters, num_clusters=num_clusters,
                                          noise_dim=cfg.noise_dim, up_type=cfg.up_type,
                                          spectral_normalization=cfg.generator_spectral_norm)
        discriminator = pix2pix.MultiScaleDiscriminator(num_scales=cfg.num_scales, base_filters=cfg.base_filters,
                                                        num_layers=cfg.pix2pix_image_d_blocks, num_clusters=num_clusters,
                                                        spectral_normalization=cfg.spectral_norm)
    return pix2pix.ClusterPix2Pix(
        generator, discriminator, diversity=cfg.diversity, lambda_reconstruction=cfg.lambda_rec, lambda_ms=cfg.lambda_ms,
        lambda_d=cfg.lambda_d, lambda_m=cfg.lambda_m, seed=cfg.seed,
        mahalanobis_warmup_steps=int(round(cfg.mahalanobis_warmup * total_steps)), **cluster_args)


def _check_dmit_sizes(cfg) -> None:
    """The image size must suit the down-sampling and every discriminator (a ConfigError otherwise)."""
    from pop_tf.models import dmit

    factor = 2 ** cfg.num_downsampling
    if cfg.image_size % factor:
        raise config_lib.ConfigError(f"config key 'train_translator.image_size': {cfg.image_size} must be divisible "
                                     f"by 2^num_downsampling = {factor}")
    if min(dmit.image_patch_sizes(cfg.image_size, cfg.num_scales, cfg.image_d_blocks)) < 1:
        raise config_lib.ConfigError(f"train_translator.image_size={cfg.image_size} is too small for the image "
                                     "discriminators; lower train_translator.num_scales or image_d_blocks")
    if dmit.content_patch_size(cfg.image_size, cfg.num_downsampling, cfg.content_d_blocks) < 1:
        raise config_lib.ConfigError(f"train_translator.image_size={cfg.image_size} is too small for the content "
                                     "discriminator; lower train_translator.content_d_blocks")


def _check_pix2pix_sizes(cfg) -> None:
    """The image size must suit every discriminator scale (a ConfigError otherwise)."""
    from pop_tf.models import pix2pix

    if min(pix2pix.MultiScaleDiscriminator.patch_sizes(cfg.image_size, cfg.num_scales, cfg.pix2pix_image_d_blocks)) < 1:
        raise config_lib.ConfigError(f"train_translator.image_size={cfg.image_size} is too small for the pix2pix "
                                     f"discriminator; lower train_translator.pix2pix_image_d_blocks "
                                     f"({cfg.pix2pix_image_d_blocks}) or num_scales ({cfg.num_scales})")


def schedule_of(cfg) -> tuple:
    """(epochs, decay_epochs, learning_rate) of the configured model: DMIT's or pix2pix's own."""
    if cfg.model == "dmit":
        return cfg.epochs, cfg.decay_epochs, cfg.learning_rate
    return cfg.pix2pix_epochs, cfg.pix2pix_decay_epochs, cfg.pix2pix_learning_rate


def dmit_diversity(cfg) -> str:
    """`DMITTrainer`'s diversity mode for the config: none = DMIT as published (its own term)."""
    if cfg.diversity == "none":
        return "dmit" if cfg.lambda_diversity > 0 else "none"
    return cfg.diversity


def build_dmit(cfg, num_clusters: int = 0, cluster_args: dict = None, total_steps: int = 0):
    """The (uncompiled) `DMITTrainer` of a translator config, weights drawn from `cfg.seed`."""
    import keras

    from pop_tf import data
    from pop_tf.models import dmit, dmit_trainer

    keras.utils.set_random_seed(cfg.seed)
    # Only the networks take the mixed policy; the trainer (losses, step counter) stays float32.
    with precision.policy(cfg.mixed_precision):
        networks = dmit.build_networks(
            label_dim=data.LABEL_DIM, style_dim=cfg.style_dim, base_filters=cfg.base_filters,
            num_downsampling=cfg.num_downsampling, content_residual_blocks=cfg.content_residual_blocks,
            style_blocks=cfg.style_blocks, decoder_residual_blocks=cfg.decoder_residual_blocks,
            num_scales=cfg.num_scales, image_d_blocks=cfg.image_d_blocks, content_d_blocks=cfg.content_d_blocks,
            num_clusters=num_clusters, up_type=cfg.up_type, dropout_rate=cfg.dropout_rate,
            share_discriminator=cfg.share_discriminator, spectral_normalization=cfg.spectral_norm,
            generator_spectral_normalization=cfg.generator_spectral_norm,
            style_normalization=None if cfg.style_normalization == "none" else cfg.style_normalization,
            norm_type=cfg.norm_type)
    return dmit_trainer.DMITTrainer(
        **networks, share_discriminator=cfg.share_discriminator, diversity=dmit_diversity(cfg),
        lambda_reconstruction=cfg.lambda_rec, lambda_kl=cfg.lambda_kl, lambda_cycle=cfg.lambda_cycle,
        lambda_latent=cfg.lambda_latent, lambda_content=cfg.lambda_content,
        lambda_diversity=cfg.lambda_diversity, lambda_adversarial=cfg.lambda_adversarial, lambda_ms=cfg.lambda_ms,
        lambda_d=cfg.lambda_d, lambda_m=cfg.lambda_m, seed=cfg.seed,
        mahalanobis_warmup_steps=int(round(cfg.mahalanobis_warmup * total_steps)),
        colour_label_index=len(data.POPULARITIES) + data.MODALITIES.index("color"), **(cluster_args or {}))


def compile_dmit(trainer, cfg, learning_rate) -> None:
    """Compiles a `build_dmit` trainer: one Adam per variable set
    (`dmit_trainer.make_optimizers`), each in a `LossScaleOptimizer` under `cfg.mixed_precision` float16, and XLA per `cfg.jit_compile`."""
    from pop_tf.models import dmit_trainer

    optimizers = dmit_trainer.make_optimizers(learning_rate, cfg.beta_1, cfg.beta_2, cfg.share_discriminator)
    trainer.compile({name: precision.loss_scaled(optimizer, cfg.mixed_precision) for name, optimizer in optimizers.items()},
                    jit_compile=cfg.jit_compile)


def _held_out_posts_by_domain(input_dir: str, stored_size: int, image_size: int, count: int) -> dict:
    """Up to `count` held-out posts of each popularity (test split, else train): {0|1: [(image, edge)]}.

    Keys index `data.POPULARITIES`; images and edges are uint8 [S, S, 3]. Reading stops as soon as
    both domains have `count`, so a large test split is not read whole.
    """
    import tensorflow as tf

    from pop_tf import data

    for split in ("test", "train"):
        pattern = layout.shard_pattern(input_dir, split)
        if not tf.io.gfile.glob(pattern):
            continue
        found = {0: [], 1: []}
        for batch in data.post_dataset(pattern, stored_size, 64, image_size=image_size, scored=True):
            for image, edge, domain in zip(batch["image"].numpy(), batch["edge"].numpy(), batch["domain"].numpy()):
                domain = domain.decode("utf-8")
                if domain in data.POPULARITIES and len(found[data.POPULARITIES.index(domain)]) < count:
                    found[data.POPULARITIES.index(domain)].append((image, edge))
            if min(len(v) for v in found.values()) >= count:
                break
        if found[0] or found[1]:
            return found
    raise TranslatorError(f"no post in {input_dir} is in a popularity domain to preview or evaluate the translator")


def _domain_rows(found: dict, count: int, alternate_modality: bool) -> dict:
    """Inputs, their labels, references of the opposite popularity and target labels, [−1, 1] floats.

    Rows take the two popularities in turn; with `alternate_modality` every other row's input is
    the edge map. The target is always the opposite popularity in colour; the reference is a post
    of that popularity (the input itself when the held-out posts have none).
    """
    import numpy as np

    from pop_tf import data

    order = [(pop, k) for k in range(count) for pop in (0, 1) if k < len(found[pop])][:count]
    rows = {"input": [], "source": [], "reference": [], "target": []}
    for i, (pop, k) in enumerate(order):
        image, edge = found[pop][k]
        modality = "edge" if alternate_modality and i % 2 else "color"
        others = found[1 - pop]
        rows["input"].append(edge if modality == "edge" else image)
        rows["source"].append(data.domain_label(data.POPULARITIES[pop], modality))
        rows["reference"].append(others[k % len(others)][0] if others else image)
        rows["target"].append(data.domain_label(data.POPULARITIES[1 - pop], "color"))
    return {"input": np.stack(rows["input"]).astype(np.float32) / 127.5 - 1.0,
            "source": np.stack(rows["source"]),
            "reference": np.stack(rows["reference"]).astype(np.float32) / 127.5 - 1.0,
            "target": np.stack(rows["target"])}


def dmit_grid(trainer, rows: dict, seed: int):
    """uint8 [K·S, 4·S, 3]: per row real | rec | fake_enc | fake_rand (see the module docstring)."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(rows["input"])
    columns = [x, trainer.translate(x, x, rows["source"]), trainer.translate(x, rows["reference"], rows["target"]),
               trainer.sample(x, rows["target"], seed=seed, num_samples=1)[:, 0]]
    grid = tf.concat([tf.concat(tf.unstack(column), axis=0) for column in columns], axis=1)
    return np.asarray(tf.cast(tf.clip_by_value(tf.round((grid + 1.0) * 127.5), 0, 255), tf.uint8))


# The options the ablations vary: TensorBoard's HParams tab lines up runs by these.
HPARAMS = ("model", "diversity", "image_size", "base_filters", "batch_size", "epochs", "learning_rate",
           "pix2pix_epochs", "pix2pix_learning_rate", "up_type", "generator_spectral_norm", "lambda_ms",
           "lambda_d", "lambda_m", "lambda_rec", "lambda_kl", "lambda_diversity", "seed")


def _write_hparams(cfg, logdir: str) -> None:
    """Records the run's options for TensorBoard's HParams dashboard, beside Keras's train scalars."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    with tf.summary.create_file_writer(logdir).as_default():
        hparams_api.hparams({name: getattr(cfg, name) for name in HPARAMS},
                            trial_id=os.path.basename(os.path.abspath(cfg.output)))


def _check_config(cfg) -> None:
    if not cfg.input or not cfg.output:
        raise config_lib.ConfigError("train_translator needs 'train_translator.input' (a score output folder; "
                                     "pix2pix also takes an ingest folder) and 'train_translator.output'")
    if cfg.diversity == "clusters" and not cfg.clusters:
        raise config_lib.ConfigError("train_translator.diversity=clusters needs 'train_translator.clusters' "
                                     "(a cluster output folder)")


def _write_json(path: str, value: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


@dataclasses.dataclass
class _ModelRun:
    """What differs between DMIT and pix2pix around the shared training driver."""

    trainer: object
    optimizers: dict  # checkpointed beside the trainer, by name
    step: object  # callable: the global step
    dataset: object  # callable: start step -> the training tf.data.Dataset
    grid: object  # callable: the sample grid, uint8 [H, W, 3]
    grid_title: str
    held_out: object  # callable: (outputs [N, K, S, S, 3], one output or reconstruction per input, reals)
    weights: str  # the shipped weights' file name
    weights_of: object  # the network(s) whose weights ship


def _dmit_run(cfg, stored_size, clusters, num_clusters, total_steps, schedule) -> _ModelRun:
    from pop_tf import data

    trainer = build_dmit(cfg, num_clusters if clusters else 0, _cluster_args(cfg, clusters), total_steps)
    compile_dmit(trainer, cfg, schedule)
    preview = _domain_rows(_held_out_posts_by_domain(cfg.input, stored_size, cfg.image_size, cfg.num_sample_edges),
                           cfg.num_sample_edges, alternate_modality=True)

    def dataset(start_step):
        return data.domain_pair_dataset(layout.shard_pattern(cfg.input, "train"), stored_size, cfg.image_size,
                                        cfg.batch_size, seed=cfg.seed + start_step, flip=cfg.flip,
                                        cluster_of=clusters[1] if clusters else None,
                                        modalities=tuple(cfg.modalities))

    def held_out():
        rows = _domain_rows(_held_out_posts_by_domain(cfg.input, stored_size, cfg.image_size, cfg.eval_inputs),
                            cfg.eval_inputs, alternate_modality=False)
        outputs = trainer.sample(rows["input"], rows["target"], seed=cfg.seed + 1, num_samples=cfg.eval_samples)
        return outputs, trainer.translate(rows["input"], rows["input"], rows["source"]), rows["input"]

    # DMIT's generator Adam is applied three times a step, so its trainer counts the steps itself.
    return _ModelRun(trainer, trainer.optimizers, lambda: trainer.step_counter, dataset,
                     lambda: dmit_grid(trainer, preview, cfg.seed),
                     "samples (rows: held-out posts; columns: real | rec | fake_enc | fake_rand)", held_out,
                     "dmit.weights.h5", trainer)


def _pix2pix_run(cfg, stored_size, clusters, num_clusters, total_steps, schedule) -> _ModelRun:
    import keras

    from pop_tf import data

    trainer = _build_pix2pix(cfg, num_clusters, _cluster_args(cfg, clusters), total_steps)
    trainer.compile(*(precision.loss_scaled(keras.optimizers.Adam(schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2),
                                            cfg.mixed_precision) for _ in range(2)),
                    jit_compile=cfg.jit_compile)
    preview_edges, _ = _held_out(cfg.input, stored_size, cfg.image_size, cfg.num_sample_edges)

    def dataset(start_step):
        return data.edge_to_image_dataset(layout.shard_pattern(cfg.input, "train"), stored_size, cfg.image_size,
                                          cfg.batch_size, seed=cfg.seed + start_step, flip=cfg.flip,
                                          cluster_of=clusters[1] if clusters else None)

    def held_out():
        edges, reals = _held_out(cfg.input, stored_size, cfg.image_size, cfg.eval_inputs)
        outputs, _ = trainer.sample(edges, seed=cfg.seed + 1, num_samples=cfg.eval_samples)
        return outputs, outputs[:, 0], reals

    return _ModelRun(trainer, {"g_optimizer": trainer.g_optimizer, "d_optimizer": trainer.d_optimizer},
                     lambda: trainer.g_optimizer.iterations, dataset,
                     lambda: sample_grid(trainer, preview_edges, cfg.seed), "samples (edges, then one row per cluster)",
                     held_out, "generator.weights.h5", trainer.generator)


def run(cfg: config_lib.TranslatorConfig) -> dict:
    """Trains (or resumes) the translator; returns the artifact paths."""
    _check_config(cfg)
    check_stage(STAGE, cfg)
    cfg = dataclasses.replace(cfg, mixed_precision=precision.resolve(cfg.mixed_precision))
    is_dmit = cfg.model == "dmit"
    stored_size, num_train = _scored_input(cfg.input) if is_dmit else _stored_size(cfg.input)
    if num_train < cfg.batch_size:
        raise TranslatorError(f"{cfg.input} holds {num_train} training posts{' in a popularity domain' * is_dmit}, "
                              f"fewer than one batch (train_translator.batch_size={cfg.batch_size})")
    if is_dmit:
        _check_dmit_sizes(cfg)
    else:
        _check_pix2pix_sizes(cfg)

    from pop_tf import distribution

    strategy = distribution.make_strategy(cfg.distribute, STAGE)
    with distribution.worker_output(cfg.output, strategy, STAGE) as output:
        return _train(cfg, strategy, output, stored_size, num_train)


def _train(cfg, strategy, output: str, stored_size: int, num_train: int) -> dict:
    import keras
    import tensorflow as tf
    from PIL import Image

    from pop_tf import distribution, serving, training
    from pop_tf.metrics import lpips
    from pop_tf.models import clusterer

    started = time.monotonic()
    clusters, num_clusters = None, 1
    if cfg.diversity == "clusters":
        # E runs on every fake of every step (L_d, L_m): it computes in the trainer's precision.
        with precision.policy(cfg.mixed_precision), strategy.scope():
            clusters = clusterer.load_cluster_outputs(cfg.clusters)
        num_clusters = clusters[0].num_clusters
    # Named after the output folder, so ablation runs beside each other are separate TensorBoard runs.
    folder = os.path.abspath(cfg.output)
    logdir = (cfg.logdir or os.path.join(os.path.dirname(folder), "logs", os.path.basename(folder))) \
        if distribution.is_chief(strategy) else os.path.join(output, "logs")
    steps_per_epoch = cfg.steps_per_epoch or max(1, num_train // cfg.batch_size)
    epochs, decay_epochs, learning_rate = schedule_of(cfg)
    total_steps = epochs * steps_per_epoch
    schedule = training.ConstantThenLinearDecay(learning_rate, total_steps, min(decay_epochs, epochs) * steps_per_epoch)
    with strategy.scope():
        model = (_dmit_run if cfg.model == "dmit" else _pix2pix_run)(cfg, stored_size, clusters, num_clusters,
                                                                     total_steps, schedule)
    _write_hparams(cfg, os.path.join(logdir, "train"))
    callbacks = [training.ImageSummary(tf.summary.create_file_writer(os.path.join(logdir, "samples")),
                                       model.grid_title, model.grid, model.step),
                 keras.callbacks.TensorBoard(logdir, update_freq=max(1, cfg.checkpoint_every // 4))]
    fitted = training.fit_resumable(
        model.trainer, model.dataset, cfg, callbacks, stage=STAGE, output=output, resume_from=cfg.output,
        strategy=strategy, checkpoint=dict(model=model.trainer, **model.optimizers), step=model.step,
        epochs=epochs, steps_per_epoch=steps_per_epoch, hint="Lower train_translator.learning_rate")

    outputs, reconstruction, reals = model.held_out()
    weights = os.path.join(output, model.weights)
    diversity = lpips.diversity(l1_distance, outputs.numpy())
    metrics = {"model": cfg.model, "diversity": cfg.diversity, "steps": fitted.step,
               "diversity_l1": diversity["mean"], "diversity_l1_stderr": diversity["stderr"],
               "diversity_pairs": diversity["num_pairs"],
               "reconstruction_l1": float(l1_distance(reconstruction, reals).mean()),
               "num_clusters": num_clusters, "train_posts": num_train, "losses": fitted.history,
               "mixed_precision": cfg.mixed_precision}
    Image.fromarray(model.grid()).save(os.path.join(output, SAMPLES))
    model.weights_of.save_weights(weights)
    paths = {"samples": os.path.join(output, SAMPLES), "weights": weights, "checkpoints": fitted.checkpoints,
             "logs": logdir, "config": os.path.join(output, "config.json")}
    if cfg.model == "dmit":
        paths["saved_model"] = serving.export_translator(
            model.trainer, os.path.join(output, SAVED_MODEL), config_lib.to_dict(cfg),
            serving.file_fingerprint(os.path.join(cfg.input, "scores.csv")), metrics=dict(metrics))
    metrics["seconds"] = round(time.monotonic() - started, 1)
    paths["metrics"] = os.path.join(output, METRICS)
    _write_json(paths["metrics"], metrics)
    print(f"{STAGE}: {cfg.model}/{cfg.diversity}: {metrics['steps']} steps ({cfg.mixed_precision} precision); held-out diversity (mean pairwise L1) "
          f"{diversity['mean']:.4f} ± {diversity['stderr']:.4f}", file=sys.stderr)
    return paths


def main(argv=None) -> int:
    from pop_tf import train
    return train.run_trainer(argv, "translator", STAGE, run)
