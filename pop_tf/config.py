"""Typed stage configs, presets and `--set section.key=value` overrides.

Defaults live only in the dataclasses below. A preset (`pop_tf/presets/<name>.json`, or any JSON
file path) and `--set` pairs only override them; an unknown section or key, or a value of the
wrong type or outside the allowed choices, is a `ConfigError` that names the key and what is
allowed. Every int and float field declares its allowed range as field metadata (`bounded`), and
a float must be finite (NaN or ±inf, as "nan"/"inf" or JSON's NaN/Infinity, is refused); a Beam
runner must be one Beam can build. A preset file must be UTF-8 JSON, an object at the top, at most
`MAX_PRESET_BYTES`. The resolved config is written as JSON next to every stage's outputs
(`write_resolved`).
"""

import dataclasses
import difflib
import functools
import json
import math
import os
import reprlib
import typing
from importlib import resources
from typing import Literal, Optional

from pop_tf.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A config key or value that cannot be used; the message names the key."""


# `pop_tf.precision.PRECISIONS`, spelled out so that the allowed values show in the type.
Precision = Literal["none", "float16", "bfloat16", "auto"]
# `pop_tf.distribution.KINDS`: the `tf.distribute` strategy a training stage runs under.
Distribute = Literal["none", "mirrored", "multi_worker", "tpu"]
# The real images the pix2pix table's FID (and *_synth figures) compare with: which split.
FidReference = Literal["train", "test"]

# Seeds reach numpy's and Keras's seeding (below 2³²) plus small offsets: half that range is safe.
_SEED_MAX = 2**31 - 1
# The serving limits are compared in int64 after multiplying two of them (see ExportConfig).
_INT31_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config field admits: its `metadata["range"]`, declared with `bounded`.

    `low` and `high` are inclusive unless `low_open` / `high_open`; None leaves a side open-ended.
    `also` lists values admitted outside the range (such as 0 for "automatic"), `multiple_of` a
    step, `why` what the bound stands for (quoted in the error). Every float must be finite,
    whatever the range, unless `nonfinite` is set: NaN fails every comparison, so a NaN limit
    would switch its check off instead of failing it.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()
    multiple_of: Optional[int] = None
    why: str = ""
    nonfinite: bool = False

    def within(self, value) -> bool:
        """Whether `value` lies between the bounds (neither `also` nor `multiple_of` counts)."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def admits(self, value) -> bool:
        if value in self.also:
            return True
        return self.within(value) and not (self.multiple_of and value % self.multiple_of)

    def describe(self, integer: bool) -> str:
        """What is allowed, as the end of a sentence: "an integer in [16, 1024]", "a number > 0"."""
        kind = "an integer" if integer else ("a finite number" if not self.nonfinite else "a number")
        if self.multiple_of:
            kind = f"a multiple of {self.multiple_of}"
        if self.low is not None and self.high is not None:
            text = (f"{kind} in {'(' if self.low_open else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = kind
        if self.also:
            text = " or ".join(_number(a) for a in self.also) + " or " + text
        return text + (f" ({self.why})" if self.why else "")


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def bounded(default, low=None, high=None, **range_options):
    """A dataclass field with `default` and its allowed `Range(low, high, ...)` as metadata.

    Every int and float field is declared this way, so `validate_value` finds each one's bounds.
    Lower bounds are what the code needs (ResNet50 takes no input under 32², a batch holds an
    image); upper bounds sit far above any useful value (the papers use 256² images, batches of
    64) and below what exhausts a machine in one allocation: an image side of 100,000 asked for
    a 30 GB image and was killed for memory, instead of failing with a sentence.
    """
    return dataclasses.field(default=default, metadata={"range": Range(low, high, **range_options)})


def beam_runner(default: str):
    """A dataclass field naming a Beam runner, checked against the runners Beam can build."""
    return dataclasses.field(default=default, metadata={"beam_runner": True})


@dataclasses.dataclass
class SynthConfig:
    """The embedded synthetic dataset (`pop_tf.synth`).

    `broken_share` of the records break each paper filter (age, caption length, hashtag, mention)
    and `num_corrupt` records point at corrupt, non-image or missing files, so that ingest's
    rejects path is exercised; `broken.jsonl` lists them with the reason ingest must give.
    """

    output: str = ""
    num_posts: int = bounded(2000, 1, 1_000_000)
    image_size: int = bounded(64, 32, 2048)
    seed: int = bounded(0, 0, _SEED_MAX)
    num_users: int = bounded(40, 1, 100_000)
    broken_share: float = bounded(0.05, 0.0, 1.0, high_open=True)
    num_corrupt: int = bounded(6, 0, 100_000)


@dataclasses.dataclass
class IngestConfig:
    """Beam preprocessing from posts to validated TFRecords (docs/architecture.md, Input contract).

    Images are padded to a square on white and then resized to `image_size`, so the whole
    garment stays in frame and is never cropped or stretched.
    """

    input: str = ""
    output: str = ""
    image_size: int = bounded(64, 16, 1024)
    test_ratio: float = bounded(0.1, 0.0, 1.0, high_open=True)
    num_shards: int = bounded(0, 0, 10_000)  # 0: one shard per 500 input records
    # Paper filters (docs/architecture.md, Input contract); each can be switched off.
    filter_age: bool = True
    min_age_days: int = bounded(30, 0, 36_500)
    filter_caption: bool = True
    max_caption_words: int = bounded(6, 1, 10_000)
    dedupe_images: bool = True
    # Near-duplicates: perceptual hashes within this many of 64 bits AND grid colours within
    # `near_duplicate_colour_tolerance` levels (pHash alone cannot tell colour variants apart).
    near_duplicate_distance: int = bounded(6, 0, 15, why="of 64 hash bits")
    near_duplicate_colour_tolerance: int = bounded(24, 0, 255)
    # Image safety limits: checked from the header, before pixels are decoded.
    max_pixels: int = bounded(50_000_000, 1, 1_000_000_000)
    max_file_bytes: int = bounded(50 * 1024 * 1024, 1, 2**31 - 1)
    min_image_side: int = bounded(16, 1, 65_535)
    max_aspect_ratio: float = bounded(8.0, 1.0)
    # Gradient magnitude (0..1) above which a pixel is a line.
    edge_threshold: float = bounded(0.12, 0.0, 1.0, high_open=True)
    runner: str = beam_runner("FnApiRunner")


@dataclasses.dataclass
class PairsConfig:
    """Popularity-discriminable image pairs (PDIPs) from ingested posts (Ding et al. 2019).

    Two posts form a pair when they share a user, were posted within `window_days` of each
    other, and their popularity `log(1 + likes) - log(1 + followers)` differs by at least
    `min_log_margin`; each image takes part in at most `max_pairs_per_image` pairs, so no
    image dominates. Pairs are built within each split (train pairs, held-out test pairs).
    """

    input: str = ""  # an ingest output folder
    output: str = ""
    window_days: float = bounded(30.0, 0.0, 36_500.0)
    min_log_margin: float = bounded(0.5, 0.0)
    max_pairs_per_image: int = bounded(5, 1, 10_000)
    seed: int = bounded(0, 0, _SEED_MAX)
    num_shards: int = bounded(0, 0, 10_000)  # 0: one shard per 500 ingested posts
    runner: str = beam_runner("FnApiRunner")


@dataclasses.dataclass
class RankerConfig:
    """The siamese popularity ranker (Ding et al. 2019) and its training run.

    `backbone="resnet50"` is the paper's keras.applications ResNet50 (include_top=False, average
    pool); `backbone="small"` is a compact residual network of the same shape (stem, four stages
    of residual blocks, average pool) for CPU demos, `small_width` channels in its first stage.
    Images are scaled to [0, 1]; the ranker then feeds its backbone what its weights expect: [0, 1]
    unchanged (Ding's released model, random weights, the small backbone) or Keras's caffe
    preprocessing for Keras ImageNet weights (`pop_tf.models.ranker.default_input_preprocessing`).
    `weights` is `imagenet`, `none`, a local weights file, a saved ranker `.keras` file (e.g. Ding's
    converted model, `python -m pop_tf.models.convert ding`), or `hub:<handle or module dir>`.
    `mixed_precision` (`pop_tf.precision`): `none` (float32), `float16` (Keras's `mixed_float16`,
    a `LossScaleOptimizer` per optimizer), `bfloat16` (`mixed_bfloat16`; twice float32's speed
    on a CPU with AVX512_BF16) or `auto` (float16 on a GPU, bfloat16 on a CPU that runs it fast,
    else none); variables, the score head and the loss stay float32. `jit_compile` XLA-compiles
    the train step (off by default and always explicit: Keras's "auto" would switch XLA on
    wherever a GPU is present); see docs/performance.md for what each buys.
    """

    input: str = ""  # a pairs output folder
    images: str = ""  # the ingest output folder (held-out images for the truth metrics)
    truth: str = ""  # optional truth.jsonl (post_id, intrinsic) for Kendall tau / Spearman
    output: str = ""
    logdir: str = ""  # TensorBoard; default <output>/../logs/train_ranker
    backbone: Literal["resnet50", "small"] = "resnet50"
    weights: str = "imagenet"
    small_width: int = bounded(32, 1, 512)
    image_size: int = bounded(256, 32, 1024, why="ResNet50's smallest input")
    batch_size: int = bounded(64, 1, 4096)
    epochs: int = bounded(10, 1, 100_000)
    steps_per_epoch: int = bounded(0, 0, 10_000_000)  # 0: one pass over the training pairs
    backbone_learning_rate: float = bounded(1e-5, 0.0, low_open=True)
    head_learning_rate: float = bounded(1e-4, 0.0, low_open=True)
    # Paper: constant rates, no weight decay. "cosine" decays both rates to 0 over the run.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = bounded(0.0, 0.0)  # > 0: AdamW with this decoupled decay
    dropout: float = bounded(0.0, 0.0, 1.0, high_open=True)  # on the pooled features before the score head, in [0, 1)
    # Targets 1 − s/2 and s/2 instead of 1 and 0: a pair whose margin is noise stops pulling the
    # score gap of a memorised pair towards infinity. In [0, 1).
    label_smoothing: float = bounded(0.0, 0.0, 1.0, high_open=True)
    # The weights the stage ships: "best" restores the epoch with the highest held-out pairwise
    # accuracy (ties: lower held-out loss), since a small dataset is overfitted before the run
    # ends; "last" keeps the final step's. The held-out pairs then chose the epoch, so their
    # accuracy in metrics.json is slightly optimistic; Kendall τ against truth is not selected on.
    select_epoch: Literal["best", "last"] = "best"
    flip: bool = True
    # Random translation, as a fraction of the side (white fill).
    max_shift: float = bounded(0.0, 0.0, 1.0, high_open=True)
    shuffle_buffer: int = bounded(2048, 1, 1_000_000)
    checkpoint_every: int = bounded(100, 1, 10_000_000)  # steps
    num_logged_images: int = bounded(8, 0, 256)
    mixed_precision: Precision = "none"
    jit_compile: bool = False  # XLA-compile the train step
    # tf.distribute (pop_tf.distribution): none | mirrored (local GPUs) | multi_worker (TF_CONFIG) | tpu.
    # batch_size stays the global batch, split over the replicas.
    distribute: Distribute = "none"
    seed: int = bounded(0, 0, _SEED_MAX)


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring of every ingested image with the trained ranker, and domain labels.

    A post is `popular` when its score is at or above the `popular_quantile` of the training
    split's scores and `unpopular` at or below the `unpopular_quantile`; posts in between get no
    popularity domain (the translator trains on the two clear ends). With `threshold` set, a
    single score threshold replaces the quantiles.
    """

    input: str = ""  # the ingest output folder
    model: str = ""  # a ranker SavedModel folder
    output: str = ""
    batch_size: int = bounded(64, 1, 4096)
    unpopular_quantile: float = bounded(0.4, 0.0, 1.0)
    popular_quantile: float = bounded(0.6, 0.0, 1.0)
    threshold: Optional[float] = bounded(None)


@dataclasses.dataclass
class ClusterConfig:
    """EfficientNet-B0 features, k-means and per-cluster statistics (Suzuki et al. 2022).

    Features: EfficientNetB0 (include_top=False) at `feature_size` → 7×7×1280 → mean over
    channels → 49-d (for another size, (size/32)² dims). Every cluster keeps the same n−1
    features, n the size of the smallest cluster (of at least 2) and the features those of largest
    variance within it (the paper's rule); `covariance_epsilon` × the mean
    variance is added to every Σ diagonal so its inverse is stable. `mixed_precision` is the
    feature extractor's compute policy (`pop_tf.precision`; the features are float32 either way).
    """

    input: str = ""  # the ingest output folder
    output: str = ""
    weights: str = "imagenet"
    feature_size: int = bounded(224, 32, 1024, multiple_of=32, why="EfficientNet's stride")
    num_clusters: int = bounded(10, 1, 10_000)
    covariance_epsilon: float = bounded(1e-3, 0.0, low_open=True)
    batch_size: int = bounded(32, 1, 4096)
    examples_per_cluster: int = bounded(8, 0, 1000)
    mixed_precision: Precision = "none"
    # tf.distribute for the embedding step (pop_tf.distribution); batch_size is the global batch.
    distribute: Distribute = "none"
    seed: int = bounded(0, 0, _SEED_MAX)


@dataclasses.dataclass
class TranslatorConfig:
    """The translation GAN: DMIT (the popularity translator) or Suzuki et al.'s cluster-conditioned pix2pix.

    `model="dmit"` (Yu et al. 2019) trains one multi-domain DMIT on the score stage's output: every
    popular or unpopular post (the undecided middle is left out) as its colour image or its edge
    map, labelled popularity one-hot ++ modality one-hot. The DMIT keys below default to the
    official DMIT options: style code `style_dim`, content encoder `num_downsampling` stride-2
    convs + `content_residual_blocks`, style encoder `style_blocks`, decoder
    `decoder_residual_blocks` CBIN blocks and `up_type` up-sampling, image discriminators of
    `num_scales` scales × `image_d_blocks` blocks (one shared with `share_discriminator`),
    content discriminator of `content_d_blocks` blocks; widths follow `base_filters` (nef = ndf).
    Loss weights: `lambda_rec` (L1 reconstruction), `lambda_kl` (summed KL), `lambda_cycle`,
    `lambda_latent` (latent regression), `lambda_content` (content reconstruction),
    `lambda_diversity` (DMIT's diversity term) and `lambda_adversarial`.

    `model="pix2pix"` trains edge map → colour garment on the ingested (or scored) posts.

    `diversity` picks the diversity method on top of either generator (the baselines of Suzuki
    et al.'s table): `none` — the model as published (pix2pix-like LSGAN + L1; DMIT with its own
    diversity term, `lambda_diversity`, which 0 switches off), `ms` (MSGAN mode seeking,
    `lambda_ms`; for DMIT it replaces DMIT's term) or `clusters` (`ms` + the cluster one-hot
    condition, L_d and L_m from the cluster stage; the paper's method).
    `mahalanobis_warmup` is the fraction of training before L_m switches on (paper: epoch 100 of
    400 = 0.25). DMIT's learning rate is constant for `epochs − decay_epochs` epochs, then decays
    linearly to 0 (DMIT: 100 + 100); pix2pix has its own `pix2pix_epochs`,
    `pix2pix_decay_epochs` and `pix2pix_learning_rate` (Suzuki et al.: 400 epochs, no decay,
    MSGAN's 2e-4). `up_type` is the decoders' up-sampling (both models); `spectral_norm` and
    `generator_spectral_norm` choose the semantics of spectral normalisation
    (`pop_tf.layers.spectral`) in the discriminators and in the generator networks.

    `mixed_precision` (`pop_tf.precision`: none, float16, bfloat16 or auto) builds the networks
    under that policy (float16 wraps every optimizer in a `LossScaleOptimizer`); the trainers'
    losses stay float32. `jit_compile` XLA-compiles the train step (off by default and always
    explicit: Keras's "auto" would switch XLA on wherever a GPU is present); see
    docs/performance.md.
    """

    input: str = ""  # a score (or ingest) output folder: train-*/test-*.tfrecord.gz
    clusters: str = ""  # a cluster output folder (diversity=clusters)
    output: str = ""
    logdir: str = ""  # TensorBoard; default <output>/../logs/<output folder name>
    model: Literal["dmit", "pix2pix"] = "dmit"
    diversity: Literal["none", "ms", "clusters"] = "none"
    image_size: int = bounded(256, 16, 1024)
    base_filters: int = bounded(64, 1, 1024)
    noise_dim: int = bounded(8, 1, 1024)
    num_scales: int = bounded(2, 1, 8)
    pix2pix_image_d_blocks: int = bounded(3, 1, 10)  # PatchGAN layers per scale (pix2pix's n_layers_D)
    batch_size: int = bounded(1, 1, 1024)
    epochs: int = bounded(200, 1, 100_000)
    decay_epochs: int = bounded(100, 0, 100_000)
    steps_per_epoch: int = bounded(0, 0, 10_000_000)  # 0: one pass over the training posts
    learning_rate: float = bounded(1e-4, 0.0, low_open=True)
    beta_1: float = bounded(0.5, 0.0, 1.0, high_open=True)
    beta_2: float = bounded(0.999, 0.0, 1.0, high_open=True)
    lambda_ms: float = bounded(1.0, 0.0)
    lambda_d: float = bounded(5.0, 0.0)
    lambda_m: float = bounded(0.2, 0.0)
    mahalanobis_warmup: float = bounded(0.25, 0.0, 1.0)
    # pix2pix's own schedule (model=pix2pix): Suzuki et al. train 400 epochs at MSGAN's rate and
    # switch L_m on at epoch 100 (mahalanobis_warmup = 0.25), with no decay.
    pix2pix_epochs: int = bounded(400, 1, 100_000)
    pix2pix_decay_epochs: int = bounded(0, 0, 100_000)
    pix2pix_learning_rate: float = bounded(2e-4, 0.0, low_open=True)
    # DMIT (model=dmit): the official DMIT options.
    style_dim: int = bounded(8, 1, 1024)
    num_downsampling: int = bounded(2, 0, 8)
    content_residual_blocks: int = bounded(4, 0, 64)
    style_blocks: int = bounded(4, 1, 16)
    decoder_residual_blocks: int = bounded(6, 0, 64)
    image_d_blocks: int = bounded(3, 1, 16)
    content_d_blocks: int = bounded(5, 1, 16)
    up_type: Literal["transpose", "nearest"] = "transpose"
    # Spectral normalisation of the discriminators and of the generator networks (encoders and
    # decoder): "pytorch" (the official code's semantics), "keras" (projection) or "none".
    spectral_norm: Literal["keras", "pytorch", "none"] = "pytorch"
    generator_spectral_norm: Literal["keras", "pytorch", "none"] = "pytorch"
    # The style encoder's normalisation: "instance" (DMIT) or "none" (MUNIT's style encoder).
    style_normalization: Literal["instance", "none"] = "instance"
    # How the decoder's residual blocks take the code: "cbin" (DMIT's default `--norm_type`: an
    # additive tanh bias) or "adain" (a scale and a bias).
    norm_type: Literal["cbin", "adain"] = "cbin"
    dropout_rate: float = bounded(0.0, 0.0, 1.0, high_open=True)
    # The modalities whose domains DMIT trains on: both (the paper's edge → colour and colour →
    # colour) or colour only (every step spent on popularity translation).
    modalities: list[Literal["edge", "color"]] = dataclasses.field(default_factory=lambda: ["edge", "color"])
    share_discriminator: bool = False
    lambda_rec: float = bounded(10.0, 0.0)  # L1 to the target / reconstruction, both models
    lambda_kl: float = bounded(0.01, 0.0)
    lambda_cycle: float = bounded(10.0, 0.0)
    lambda_latent: float = bounded(1.0, 0.0)
    lambda_content: float = bounded(1.0, 0.0)
    lambda_diversity: float = bounded(0.05, 0.0)
    lambda_adversarial: float = bounded(1.0, 0.0)
    flip: bool = True
    checkpoint_every: int = bounded(500, 1, 10_000_000)
    num_sample_edges: int = bounded(6, 1, 256)  # held-out inputs in the sample grid (pix2pix: columns; dmit: rows)
    eval_inputs: int = bounded(50, 1, 100_000)  # held-out inputs for the diversity figure
    eval_samples: int = bounded(5, 2, 1000, why="diversity needs pairs")  # outputs per input
    mixed_precision: Precision = "none"
    jit_compile: bool = False  # XLA-compile the train step
    # tf.distribute (pop_tf.distribution): none | mirrored (local GPUs) | multi_worker (TF_CONFIG) | tpu.
    # batch_size stays the global batch, split over the replicas.
    distribute: Distribute = "none"
    seed: int = bounded(0, 0, _SEED_MAX)


@dataclasses.dataclass
class AblationConfig:
    """`pop-tf ablate`: one pix2pix run per diversity method, then one evaluation of them all.

    Every variant trains with the `train_translator` settings (model=pix2pix, its own diversity),
    into `<output>/pix2pix_<variant>/`; the evaluation (the `evaluate` settings) goes to
    `<output>/evaluate/`.
    """

    variants: list[Literal["none", "ms", "clusters"]] = dataclasses.field(
        default_factory=lambda: ["none", "ms", "clusters"])
    output: str = ""


@dataclasses.dataclass
class EvaluateConfig:
    """The evaluate stage (docs/metrics.md): popularity uplift, FID, LPIPS diversity, NDB/JSD, report.html.

    Reads the score stage's records (`input`: the test images of each popularity domain, and the
    training images the NDB bins are fitted on), the ranker SavedModel (`ranker`), and optionally
    the translator SavedModel (`translator`, docs/savedmodels.md) and train_translator's pix2pix output
    folders (`pix2pix_variants`, e.g. one per diversity none / ms / clusters; a clusters variant
    takes its cluster statistics from the folder named in its config.json, else from `clusters`).
    `truth` (a truth.jsonl) adds Kendall tau / Spearman of the ranker's test scores.

    `inception_weights` / `lpips_weights` are `imagenet`, `none` (random weights: smoke tests and
    the demo only, meaningless as quality figures) or a weights file. `inception_network` is
    `keras` (keras.applications' InceptionV3), `fid` (the 2015-12-05 graph of published FID) or
    `auto` (`fid` for a file written by `pop_tf.metrics.fid_convert`); the figure is FID proper
    only for that graph with the converted published weights, which the file records, and
    `inception_standard=true` stops the run unless it is. `lpips_net` is the LPIPS backbone,
    `vgg` (Keras ImageNet weights available) or `alex` (the `lpips` package's default; a
    converted torchvision file or `none`); the figure is LPIPS proper only with
    `lpips_standard`, the user's statement that the backbone and `lpips_linear_weights` are
    conversions of the published weights. Everything else is labelled fid_like / lpips_like.
    LPIPS diversity: `num_inputs` (N) test inputs × `samples_per_input` (M) random styles, every
    pair of outputs of the same input. NDB/JSD: `ndb_bins` k-means bins fitted on up to
    `ndb_max_train` training images downsampled to `ndb_image_size`² raw pixels (as Richardson &
    Weiss), z-test level `ndb_alpha`; `ndb_whiten` (per-pixel standardisation) is off by default
    because it blows near-constant white-background pixels up into huge coordinates.
    `max_images` caps the test images translated for the uplift and FID (0: all of them).
    `fid_reference` is the real image set of the pix2pix table (Table 1 layout, Suzuki et al.):
    `test` (all colour test images) or `train` (the training split's colour images, as Suzuki et
    al. compare generated images with training images); it is the reference of that table's FID
    and, with the attribute judge, of its fid/kid/precision/recall_synth. NDB/JSD bins are always
    fitted on training images (Richardson & Weiss). The DMIT translator's figures always use the
    real popular colour test images (its target domain).

    Attribute evaluation (only when `truth` is a truth.jsonl with attributes, i.e. pop_tf's synth):
    a small attribute classifier (`pop_tf.models.attribute_classifier`) is trained on up to
    `attribute_max_train` training images at `attribute_image_size` px (0: each generator's output
    size) for `attribute_steps` batches of `attribute_batch_size` (0: 15 passes over the images,
    at least 400 and at most 900 batches), width `attribute_width`, and
    cached in the output folder by its data and settings. It reads shape, colour, pattern and
    sleeve of the outputs (a shape is confident at probability >= `attribute_confidence`, a colouring
    when its two likeliest colours reach it together); its
    features give fid_synth, kid_synth, precision/recall_synth, NDB/JSD and diversity_synth;
    `attribute_samples` random styles per input count distinct confident colours.

    `mixed_precision` (`pop_tf.precision`) is the compute policy of the Inception and LPIPS
    feature extractors; their features, and every statistic built on them, stay float32.
    """

    input: str = ""  # a score output folder
    ranker: str = ""  # a ranker SavedModel folder
    translator: str = ""  # a translator SavedModel folder (optional)
    pix2pix_variants: list[str] = dataclasses.field(default_factory=list)  # train_translator pix2pix folders
    clusters: str = ""  # a cluster output folder, for clusters variants whose own is gone
    truth: str = ""  # optional truth.jsonl (post_id, intrinsic)
    output: str = ""
    logdir: str = ""  # TensorBoard; default <output>/../logs/evaluate
    inception_weights: str = "imagenet"
    inception_network: Literal["auto", "keras", "fid"] = "auto"
    inception_standard: bool = False
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_weights: str = "imagenet"
    lpips_linear_weights: str = ""  # .npz of the 1x1 linear weights; empty: all ones
    lpips_standard: bool = False
    num_inputs: int = bounded(100, 1, 100_000)
    samples_per_input: int = bounded(10, 2, 1000, why="diversity needs pairs of outputs")
    max_images: int = bounded(0, 0, 10_000_000)
    fid_reference: FidReference = "test"
    num_grid_pairs: int = bounded(4, 0, 1000)
    ndb_bins: int = bounded(100, 2, 10_000)
    ndb_alpha: float = bounded(0.05, 0.0, 1.0, low_open=True, high_open=True)
    ndb_whiten: bool = False
    ndb_image_size: int = bounded(32, 1, 256)
    ndb_max_train: int = bounded(20000, 1, 10_000_000)
    uplift_threshold: float = bounded(1.0)  # the paper's "share above 1"
    batch_size: int = bounded(16, 1, 4096)
    seed: int = bounded(0, 0, _SEED_MAX)
    attribute_image_size: int = bounded(0, 16, 1024, also=(0,), why="0: the size of the generator being judged")
    # 0: 15 passes over the training images, at least 400 and at most 900 batches.
    attribute_steps: int = bounded(0, 0, 1_000_000)
    attribute_batch_size: int = bounded(64, 1, 4096)
    attribute_width: int = bounded(24, 1, 1024)
    attribute_max_train: int = bounded(20000, 1, 10_000_000)
    # Random styles per input for the distinct-colour count.
    attribute_samples: int = bounded(8, 2, 1000, why="distinct colours and diversity need pairs")
    attribute_confidence: float = bounded(0.8, 0.0, 1.0, low_open=True, high_open=True)
    mixed_precision: Precision = "none"


@dataclasses.dataclass
class ExportConfig:
    """Trained SavedModels into `<export_dir>/<model>/<version>/` (docs/savedmodels.md), with serving limits.

    The limits bound what one request can make a served model allocate; they are recorded in
    each model's `pop_tf.json` (`limits`), and the training stages' own SavedModels get these
    defaults. `max_pixels`: no endpoint takes an image of more pixels; `score_jpeg` reads the
    size from the JPEG/PNG header before decoding, and `pop-tf translate` checks `--a`/`--b` the
    same way. 25 MP takes a 24-MP camera photo (6000×4000), and the models see at most 256² of
    it; an image costs about 15 bytes per pixel while it is decoded and fitted (uint8 plus a
    float32 copy: ~390 MB at 25 MP), and a batch decodes up to 10 images at once, so ingest's 50
    MP limit would let one request hold ~7.5 GB. `max_samples`: the most styles `sample` draws
    per content image; its outputs and decoder activations grow with N × num_samples (10,000
    samples of one 32² image took 3.2 GB), and 32 is three times the evaluation's 10 per input.
    """

    workdir: str = ""
    export_dir: str = "saved_models"
    models: list[str] = dataclasses.field(default_factory=lambda: ["ranker", "clusterer", "translator"])
    max_pixels: int = bounded(25_000_000, 1, _INT31_MAX, why="the served graph multiplies two sides in int64")
    max_samples: int = bounded(32, 1, _INT31_MAX)


@dataclasses.dataclass
class Config:
    """All stage sections of one pop_tf run; `pop-tf run` and every stage CLI resolve this."""

    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    pairs: PairsConfig = dataclasses.field(default_factory=PairsConfig)
    train_ranker: RankerConfig = dataclasses.field(default_factory=RankerConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    train_translator: TranslatorConfig = dataclasses.field(default_factory=TranslatorConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    ablation: AblationConfig = dataclasses.field(default_factory=AblationConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


PRESETS = ("demo", "paper")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


# Values in messages are shortened: a preset can hold a megabyte string or a list nested
# hundreds deep, whose full repr would bury the sentence (or exceed the recursion limit).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 60, 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 4


def _shown(value) -> str:
    return _SHORT.repr(value)


def _allowed(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        return " or ".join(_allowed(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp in (int, float, str):
        return {int: "an integer", float: "a number", str: "a string"}[tp]
    return f"a value of type {getattr(tp, '__name__', tp)}"


def _convert(key: str, value, tp):
    """Converts a JSON value or a `--set` string to the field type `tp`, or names what is allowed."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': {_shown(value)} is not {_allowed(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"config key '{key}': {_shown(value)} is not allowed; use {_allowed(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"config key '{key}': {_shown(value)} is not true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': {_shown(value)} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': {_shown(value)} is not an integer")
    if tp is float:
        # float() of an int beyond 1.8e308 raises OverflowError; finiteness is validate_value's.
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except (ValueError, OverflowError):
                pass
        raise ConfigError(f"config key '{key}': {_shown(value)} is not a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': {_shown(value)} is not a string")
    if origin in (tuple, list):
        (item_type, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': {_shown(value)} is not a list")
        items = [_convert(key, v.strip() if isinstance(v, str) else v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")


def _field_types(section_obj) -> dict:
    hints = typing.get_type_hints(type(section_obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(section_obj)}


def _name(text: str) -> str:
    """A key or section name as quoted in a message: a preset can hold a name of any length."""
    return text if len(text) <= 80 else text[:77] + "..."


# Keys that were renamed so that one idea has one name across the models: an old name is refused
# with the new one, rather than silently ignored or guessed.
RENAMED = {
    "train_translator.lambda_l1": "train_translator.lambda_rec",
    "train_translator.discriminator_layers": "train_translator.pix2pix_image_d_blocks",
}


def set_value(config: Config, dotted_key: str, value) -> None:
    """Sets `section.key` on `config` with type conversion; unknown names are a ConfigError."""
    sections = {f.name for f in dataclasses.fields(config)}
    if "." not in dotted_key:
        raise ConfigError(
            f"config key '{_name(dotted_key)}' needs a section, e.g. 'ingest.{_name(dotted_key)}'; "
            f"sections: {', '.join(sorted(sections))}")
    section, key = dotted_key.split(".", 1)
    if section not in sections:
        raise ConfigError(
            f"unknown config section '{_name(section)}' in '{_name(dotted_key)}'; "
            f"sections: {', '.join(sorted(sections))}")
    if dotted_key in RENAMED:
        raise ConfigError(f"config key '{dotted_key}' is now '{RENAMED[dotted_key]}'; use that name")
    section_obj = getattr(config, section)
    types = _field_types(section_obj)
    if key not in types:
        close = difflib.get_close_matches(key, types, n=1)
        hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown config key '{_name(dotted_key)}'{hint}; keys of '{section}': {', '.join(sorted(types))}")
    converted = _convert(dotted_key, value, types[key])
    validate_value(dotted_key, converted)
    setattr(section_obj, key, converted)


@functools.lru_cache(maxsize=1)
def section_fields() -> dict:
    """{"section.key": (dataclasses.Field, field type)} for every field of every section."""
    found = {}
    for name, section in typing.get_type_hints(Config).items():
        hints = typing.get_type_hints(section)
        for field in dataclasses.fields(section):
            found[f"{name}.{field.name}"] = (field, hints[field.name])
    return found


def validate_value(key: str, value) -> None:
    """Checks a converted value against what its field declares; the message names the key.

    Every float must be finite (NaN fails every comparison, so a NaN limit would quietly switch a
    check off), every int or float lies in its field's `Range`, and a Beam runner must be one
    that Beam can build. Called by `set_value`, and by stages for configs built in code.
    """
    if key not in section_fields() or value is None or isinstance(value, bool):
        return
    field, tp = section_fields()[key]
    if field.metadata.get("beam_runner"):
        from pop_tf.beam.options import runner_problem

        problem = runner_problem(value)
        if problem:
            raise ConfigError(f"config key '{key}': {problem}")
        return
    bounds = field.metadata.get("range")
    if bounds is None or not isinstance(value, (int, float)):
        return
    integer = int in (tp, *typing.get_args(tp)) and float not in (tp, *typing.get_args(tp))
    if isinstance(value, float) and not math.isfinite(value) and not bounds.nonfinite:
        raise ConfigError(f"config key '{key}': {value!r} is not a finite number; use {bounds.describe(integer)}")
    if not bounds.admits(value):
        problem = "is out of range" if not bounds.within(value) else "is not allowed"
        raise ConfigError(f"config key '{key}': {_shown(value)} {problem}; use {bounds.describe(integer)}")


def apply_overrides(config: Config, overrides: dict, origin: str) -> None:
    """Applies a nested `{section: {key: value}}` dict; `origin` names its source in errors."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{origin}: expected an object of sections, got {type(overrides).__name__}")
    for section, values in overrides.items():
        if section.startswith("_"):  # comments in preset files
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{_name(section)}' must be an object of keys, got "
                              f"{_json_type(values)}")
        for key, value in values.items():
            try:
                set_value(config, f"{section}.{key}", value)
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e}") from None


# A preset holds a few settings (the paper's is 150 bytes); anything near this is not one.
MAX_PRESET_BYTES = 1024 * 1024


def _unique_keys(pairs) -> dict:
    """json's object hook: a key given twice is an error (json itself keeps the last one silently)."""
    found = {}
    for key, value in pairs:
        if key in found:
            raise ConfigError(f"key {_shown(key)} appears twice in one object")
        found[key] = value
    return found


def _parse_preset(text: str, origin: str) -> dict:
    """The JSON object of sections in `text`, or a ConfigError naming `origin` and what is wrong."""
    try:
        overrides = json.loads(text, object_pairs_hook=_unique_keys)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{origin}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply to be a preset, which is an object of sections "
                          "holding keys and their values") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{origin}: not a usable JSON preset ({_SHORT.repr(str(e))})") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{origin}: the top level must be an object of sections, such as "
                          f'{{"ingest": {{"image_size": 64}}}}; got {_json_type(overrides)}')
    return overrides


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def load_preset(name_or_path: str) -> dict:
    """The overrides of a named preset or a JSON file: `{section: {key: value}}`.

    A file must be UTF-8 JSON (a byte-order mark is allowed) of at most `MAX_PRESET_BYTES`,
    holding an object at the top; anything else is a ConfigError naming the file.
    """
    if name_or_path in PRESETS:
        text = resources.files("pop_tf.presets").joinpath(f"{name_or_path}.json").read_text(encoding="utf-8")
        return _parse_preset(text, f"preset '{name_or_path}'")
    if os.path.isfile(name_or_path):
        origin = f"preset file {name_or_path}"
        try:
            with open(name_or_path, "rb") as f:
                data = f.read(MAX_PRESET_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"{origin}: cannot be read ({e.strerror or e})") from None
        if len(data) > MAX_PRESET_BYTES:
            raise ConfigError(f"{origin}: larger than {MAX_PRESET_BYTES:,} bytes, which no preset needs")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{origin}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                              "save it as UTF-8 JSON") from None
        return _parse_preset(text, origin)
    raise ConfigError(
        f"unknown preset {_shown(name_or_path)}; use one of {', '.join(PRESETS)} or a JSON file path")


def parse_set(pair: str, default_section: Optional[str] = None) -> tuple:
    """Splits `key=value`; a key without a section belongs to `default_section` (a stage CLI's)."""
    if "=" not in pair:
        raise ConfigError(f"--set expects key=value, got '{pair}'")
    key, value = pair.split("=", 1)
    key = key.strip()
    if "." not in key and default_section:
        key = f"{default_section}.{key}"
    return key, value


def resolve(preset: Optional[str] = None, sets=(), default_section: Optional[str] = None,
            overrides: Optional[dict] = None) -> Config:
    """Defaults, then the preset, then `overrides` (from CLI flags), then `--set` pairs."""
    config = Config()
    if preset:
        apply_overrides(config, load_preset(preset), f"preset '{preset}'")
    if overrides:
        apply_overrides(config, overrides, "command-line options")
    for pair in sets:
        key, value = parse_set(pair, default_section)
        set_value(config, key, value)
    return config


def changed_settings(section_config, directory: str, filename: str = "config.json") -> list:
    """The settings that differ from the resolved config an earlier run wrote into `directory`,
    as "key: old -> new" lines (empty when there is no earlier config or nothing changed)."""
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        previous = json.load(f)
    current = to_dict(section_config)
    return [f"{key}: {previous.get(key, '(unset)')!r} -> {current.get(key, '(unset)')!r}"
            for key in sorted(set(previous) | set(current)) if previous.get(key) != current.get(key)]


def write_resolved(section_config, directory: str, filename: str = "config.json") -> str:
    """Writes the resolved section config next to a stage's outputs (atomically); returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(to_dict(section_config), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path
