"""DMIT's trainer: the six updates of one iteration over the networks of `pop_tf.models.dmit`.

`DMITTrainer` is the `keras.Model` whose `train_step` runs DMIT's six updates per iteration, in
the official order, each with its own `GradientTape` and variable list: D_c, D_prior, D_enc
(one Adam each), then the full generator (decoder + both encoders), the decoder alone (latent
regression + diversity) and the content encoder alone (content reconstruction), all three on
the generator's one Adam, so the decoder's and content encoder's moments are shared between
their updates as in the official `update_model`.

Batches and domain pairing. The official season-transfer loader yields one image per domain
and concatenates them, x = [x_A; x_B], with target index `range(-B/2, B/2)`: every image is
translated to the OTHER image's domain and, for the encoded-style fake, takes the other image's
style. The two domains of a row always differ (`pop_tf.data.domain_pair_dataset`). Here a batch is a dict {"image_a", "label_a", "image_b", "label_b"} of N pairs; the
trainer forms x = [image_a; image_b] (2N images), source labels [label_a; label_b] and target
labels [label_b; label_a] (the "swap"), so one batch row = one image per domain of a domain
pair, exactly DMIT's batch at N = 1. Labels are attribute vectors (popularity one-hot +
modality one-hot, label_dim = 4), so any two of the four domains can form a pair and one model
does multi-domain, multi-dimensional translation.

Deviations, each for a reason (see also the method docstrings):
- Each sub-step recomputes its forward pass with the networks as they are at that moment. The
  official code builds one graph at the start of the iteration and back-propagates the
  decoder-only and content-encoder-only losses through activations computed before the
  generator update (which newer PyTorch versions reject as an in-place modification).
- The fakes shown to the discriminators are made with the generator networks in inference mode
  (`training=False`): in training mode Keras's spectral normalisation writes the normalised
  kernel back into the variable, which would change the generator's variables during a
  discriminator step. For the same reason every network that a sub-step does not update is
  called with `training=False` (dropout, when enabled, is then off in those calls too).
- The official per-domain loss weights (`weight_source`, for class imbalance) are not ported;
  every domain weighs 1.
- `diversity` can replace DMIT's diversity term by MSGAN's ("ms") and add Suzuki et al.'s
  cluster condition and losses ("clusters", see `DMITTrainer`).

Determinism: the trainer's random draws (reparameterisation ε, prior styles z) are stateless,
from `seed` and the step counter (each replica takes its rows of the global batch's draw);
`sample` draws from its own seed. Weight
initialisation uses Keras's global seed (`keras.utils.set_random_seed`).

References:
    Yu et al., "Multi-mapping Image-to-Image Translation via Learning Disentanglement",
    NeurIPS 2019 (DMIT; `models/base_model.py`: `update_model`). Mao et al., MSGAN, CVPR 2019.
    Suzuki, Sakaue, Sato, "Diversifying Image Synthesis using Data Classification", VISAPP 2022.
"""

import keras
import numpy as np
import tensorflow as tf

from pop_tf import distribution
from pop_tf import losses as L
from pop_tf.models._checks import check_choice
from pop_tf.models import cluster_conditioning
from pop_tf.models._checks import positive_int as _positive_int
from pop_tf.models._tracking import Untracked as _Untracked
from pop_tf.models._tracking import tf_variables as _tf_variables

DIVERSITY_MODES = ("none", "dmit", "ms", "clusters")
OPTIMIZER_NAMES = ("content_d_optimizer", "prior_d_optimizer", "encoded_d_optimizer",
                   "generator_optimizer")
# How many times one training step applies each optimizer: the generator's Adam takes the full
# step, the decoder-only and the content-encoder-only steps (DMIT's `update_model` steps the
# decoder's and the content encoder's optimizers a second time, so their Adam moments are
# shared); a shared image discriminator takes both image-D steps.
GENERATOR_UPDATES_PER_STEP = 3
SHARED_D_UPDATES_PER_STEP = 2


def make_optimizers(learning_rate=1e-4, beta_1=0.5, beta_2=0.999, share_discriminator=False):
    """One fresh Adam per DMIT variable set, as `DMITTrainer.compile` takes them.

    Args:
        learning_rate: a float or a `LearningRateSchedule` (DMIT: 1e-4, constant then linear
            decay; see `pop_tf.training.ConstantThenLinearDecay`).
        beta_1: Adam β1 (0.5).
        beta_2: Adam β2 (0.999).
        share_discriminator: leave out "encoded_d_optimizer".

    Returns:
        Dict optimizer name → `keras.optimizers.Adam`.
    """
    names = [n for n in OPTIMIZER_NAMES
             if not (share_discriminator and n == "encoded_d_optimizer")]
    updates = {"generator_optimizer": GENERATOR_UPDATES_PER_STEP,
               "prior_d_optimizer": SHARED_D_UPDATES_PER_STEP if share_discriminator else 1}
    return {name: keras.optimizers.Adam(
                PerTrainingStep.wrap(learning_rate, updates.get(name, 1)), beta_1=beta_1,
                beta_2=beta_2, name=name.replace("_optimizer", "_adam"))
            for name in names}


class PerTrainingStep(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule of training steps for an optimizer applied `updates_per_step` times a step.

    A Keras optimizer calls its schedule with its own `iterations`, which counts applies: the
    generator's Adam is applied three times a DMIT step, so an unwrapped schedule of training
    steps would start its decay at a third of training and reach 0 at two thirds.

    Args:
        schedule: a `LearningRateSchedule` over training steps.
        updates_per_step: the optimizer's applies per training step.
    """

    def __init__(self, schedule, updates_per_step):
        self.schedule = schedule
        self.updates_per_step = _positive_int(updates_per_step, "updates_per_step")

    @classmethod
    def wrap(cls, learning_rate, updates_per_step):
        """`learning_rate` itself when it is a constant or the optimizer steps once a step."""
        if updates_per_step == 1 or not isinstance(
                learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return learning_rate
        return cls(learning_rate, updates_per_step)

    def __call__(self, iterations):
        return self.schedule(tf.math.floordiv(tf.cast(iterations, tf.int64),
                                              self.updates_per_step))

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "updates_per_step": self.updates_per_step}


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


def _swap(tensor):
    """[t_a; t_b] → [t_b; t_a]: DMIT's `index_target = range(-B/2, B/2)` for a paired batch."""
    half = tf.shape(tensor)[0] // 2
    return tf.concat([tensor[half:], tensor[:half]], axis=0)


def _split(tensor, parts):
    return tf.split(tensor, parts, axis=0)


class DMITTrainer(keras.Model):
    """Trains DMIT: six updates per step, each on its own variables (see the module docstring).

    Each batch is a dict {"image_a": float [N, S, S, C] in [−1, 1], "label_a": float
    [N, label_dim], "image_b", "label_b"} (plus int "cluster_a", "cluster_b" [N] when the
    generator has `num_clusters > 0`): row n is one image of domain a and one of domain b. With
    x = [image_a; image_b], c_src = [label_a; label_b], c_tgt = [label_b; label_a]
    (module docstring), `train_step` draws ε (reparameterisation) and two prior styles z1, z2
    (stateless, from `seed` and the step counter; `_noise`), makes the discriminators'
    fakes with the current networks, then runs, in DMIT's order:

    1. `_content_d_step` (D_c, LSGAN): real (E_c(x), c_src), fake (E_c(x), c_tgt).
    2. `_image_d_steps` (D_prior then D_enc, hinge): real (x, c_src), fake (G(E_c(x), c_tgt, z1),
       c_tgt) resp. (G(E_c(x), c_tgt, swap(E_s(x))), c_tgt), and the wrong-label real (x, c_tgt)
       as a second fake set; weights 1, ½, ½. With `share_discriminator` one D (and
       optimizer) takes both updates, as `--use_same_dis`.
    3. `_generator_step` (decoder + style encoder + content encoder): λ_adv·(hinge G losses on
       both D's + LSGAN content loss with c_tgt) + λ_rec·L1(G(E_c(x), c_src, E_s(x)), x)
       + λ_kl·KL(summed) + λ_cyc·L1(G(E_c(G(x, c_tgt, z1)), c_src, E_s(x)), x).
    4. `_decoder_step` (decoder only): λ_latent·mean|μ(E_s(G(x, c_tgt, z1))) − z1| plus the
       diversity term of `diversity`.
    5. `_content_encoder_step` (content encoder only):
       λ_content·mean|E_c(x) − E_c(G(E_c(x), c_tgt, z1))|.

    No `trainable` flag is ever toggled: each tape watches only its own variables, and every
    network a step does not update is called with `training=False` (so its spectral
    normalisation does not rewrite its kernels).

    `diversity` (the term of step 4):
    - "dmit" (default): DMIT's mean|z1 − z2| / (mean|G(z1) − G(z2)| + 1e-5), weight λ_div.
    - "none": no diversity term (z2 is not even decoded).
    - "ms": MSGAN's 1 / (mean|G(z1) − G(z2)| / mean|z1 − z2| + 1e-5), weight λ_ms.
    - "clusters": "ms" + Suzuki et al.'s λ_d·L_d + gate·λ_m·L_m on E(G(x, c_tgt, z, i)) for
      both prior fakes, i = the target-domain image's cluster, gate = [step ≥
      `mahalanobis_warmup_steps`]. Needs a generator and image discriminators built with
      `num_clusters > 0` (the cluster one-hot then joins the label everywhere the label
      conditions them), the cluster statistics and a frozen feature extractor E, handled
      exactly as `ClusterPix2Pix` does (called with training=False, kept out of Keras
      tracking, watched by no tape).

    Distribution: mean losses are divided by the number of replicas before the gradient (here, not
    by Keras); the summed KL is not, so the gradient is that of the KL summed over the GLOBAL batch,
    as DMIT's is over its batch. Optimizers may be `LossScaleOptimizer`s: every step scales its
    objective with `optimizer.scale_loss`.

    Args:
        content_encoder: a `ContentEncoder`.
        style_encoder: a `StyleEncoder`.
        generator: a `Generator` (its `label_dim` is the batch's label size).
        content_discriminator: a `ContentDiscriminator`.
        prior_discriminator: an `ImageDiscriminator` for prior-style fakes.
        encoded_discriminator: an `ImageDiscriminator` for encoded-style fakes; None (or the
            prior one) with `share_discriminator=True`.
        share_discriminator: one image discriminator for both kinds of fake.
        diversity: "dmit", "none", "ms" or "clusters".
        feature_extractor: E for "clusters" (a Keras model or a callable mapping [N, S, S, C]
            in [−1, 1] to [N, D]).
        cluster_means: [K, D] for "clusters".
        inverse_covariances: [K, D, D] masked inverse covariances for "clusters"
            (`pop_tf.losses.masked_inverse_covariances`).
        feature_masks: [K, D] selected-feature masks (all ones when omitted).
        cluster_shares: [K] cluster shares for test-time cluster draws (uniform if omitted).
        lambda_reconstruction: λ_rec (10).
        lambda_kl: λ_kl (0.01), on the summed KL.
        lambda_cycle: λ_cyc (10); 0 switches the cycle term off.
        lambda_latent: λ_style, latent regression (1).
        lambda_content: λ_content, content reconstruction (1).
        lambda_diversity: λ_div for "dmit" (0.05).
        lambda_adversarial: weight of every generator adversarial term (1).
        lambda_ms: λ_ms for "ms" and "clusters" (1).
        lambda_d: λ_d for "clusters" (5).
        lambda_m: λ_m for "clusters" (0.2).
        mahalanobis_warmup_steps: steps before L_m is switched on.
        seed: integer seed of the trainer's random draws.
        colour_label_index: the label coordinate that marks the colour modality: L_d and L_m
            only judge fakes whose target label has it (the clusters are fitted on colour
            images, and an edge map's features say nothing about its cluster). None: every fake.
        **kwargs: `keras.Model` arguments (name).

    References:
        DMIT `models/base_model.py` (`update_model`, `update_dis_image`, `update_dis_content`),
        `models/season_transfer_model.py` (`prepare_data`), `util/loss.py`.
    """

    def __init__(self, content_encoder, style_encoder, generator, content_discriminator,
                 prior_discriminator, encoded_discriminator=None, share_discriminator=False,
                 diversity="dmit", feature_extractor=None, cluster_means=None,
                 inverse_covariances=None, feature_masks=None, cluster_shares=None,
                 lambda_reconstruction=10.0, lambda_kl=0.01, lambda_cycle=10.0,
                 lambda_latent=1.0, lambda_content=1.0, lambda_diversity=0.05,
                 lambda_adversarial=1.0, lambda_ms=1.0, lambda_d=5.0, lambda_m=0.2,
                 mahalanobis_warmup_steps=0, seed=0, colour_label_index=None, **kwargs):
        super().__init__(**kwargs)
        check_choice(diversity, DIVERSITY_MODES, "diversity")
        if share_discriminator:
            if encoded_discriminator is not None and encoded_discriminator is not (
                    prior_discriminator):
                raise ValueError(
                    "encoded_discriminator must be None with share_discriminator=True: the "
                    "prior discriminator judges both kinds of fake.")
        elif encoded_discriminator is None or encoded_discriminator is prior_discriminator:
            raise ValueError(
                "encoded_discriminator must be a second ImageDiscriminator unless "
                "share_discriminator=True.")
        weights = dict(lambda_reconstruction=lambda_reconstruction, lambda_kl=lambda_kl,
                       lambda_cycle=lambda_cycle, lambda_latent=lambda_latent,
                       lambda_content=lambda_content, lambda_diversity=lambda_diversity,
                       lambda_adversarial=lambda_adversarial, lambda_ms=lambda_ms,
                       lambda_d=lambda_d, lambda_m=lambda_m)
        for name, value in weights.items():
            if not value >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {value!r}.")
            setattr(self, name, float(value))
        self._check_networks(content_encoder, style_encoder, generator, content_discriminator,
                             [d for d in (prior_discriminator, encoded_discriminator) if d])

        self.content_encoder = content_encoder
        self.style_encoder = style_encoder
        self.generator = generator
        self.content_discriminator = content_discriminator
        self.prior_discriminator = prior_discriminator
        # Not assigned when shared, so that the one D is tracked (and checkpointed) once.
        self.encoded_discriminator = None if share_discriminator else encoded_discriminator
        self.share_discriminator = bool(share_discriminator)
        self.diversity = diversity
        self.label_dim = generator.label_dim
        self.style_dim = generator.style_dim
        self.num_clusters = generator.num_clusters
        self.mahalanobis_warmup_steps = _positive_int(
            mahalanobis_warmup_steps, "mahalanobis_warmup_steps", 0)
        self.seed = _positive_int(seed, "seed", 0)
        self.colour_label_index = None if colour_label_index is None else _positive_int(
            colour_label_index, "colour_label_index", 0)

        if diversity == "clusters" and not self.num_clusters:
            raise ValueError(
                "diversity='clusters' needs a generator and image discriminators built with "
                "num_clusters > 0.")
        stats = cluster_conditioning.check_statistics(
            self.num_clusters, diversity, cluster_shares, feature_extractor, cluster_means,
            inverse_covariances, feature_masks)
        self.cluster_shares = stats.shares
        self.cluster_means, self.inverse_covariances = stats.means, stats.inverse_covariances
        self.feature_masks = stats.feature_masks
        self._extractor = _Untracked(feature_extractor)

        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="only_first_replica")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self._optimizers = None
        # The networks are built (functional); nothing is left for Keras to build by tracing.
        self.built = True

    @staticmethod
    def _check_networks(content_encoder, style_encoder, generator, content_discriminator,
                        image_discriminators):
        if style_encoder.style_dim != generator.style_dim:
            raise ValueError(
                f"style_encoder.style_dim ({style_encoder.style_dim}) must equal "
                f"generator.style_dim ({generator.style_dim}).")
        for name, channels in (("generator", generator.content_channels),
                               ("content_discriminator", content_discriminator.content_channels)):
            if channels != content_encoder.content_channels:
                raise ValueError(
                    f"{name}.content_channels ({channels}) must equal the content encoder's "
                    f"output channels ({content_encoder.content_channels}).")
        if content_discriminator.label_dim != generator.label_dim:
            raise ValueError(
                f"content_discriminator.label_dim ({content_discriminator.label_dim}) must "
                f"equal generator.label_dim ({generator.label_dim}).")
        for d in image_discriminators:
            if (d.label_dim, d.num_clusters) != (generator.label_dim, generator.num_clusters):
                raise ValueError(
                    f"{d.name} has label_dim={d.label_dim}, num_clusters={d.num_clusters} but "
                    f"the generator has label_dim={generator.label_dim}, "
                    f"num_clusters={generator.num_clusters}; they must match.")

    # -- Keras plumbing ------------------------------------------------------------------------

    @property
    def loss_names(self):
        """Names of the logged losses (the loss trackers), in update order."""
        names = ["d_content_loss", "d_prior_loss", "d_encoded_loss",
                 "g_loss", "g_prior_loss", "g_encoded_loss", "g_content_loss",
                 "reconstruction_loss", "kl_loss"]
        if self.lambda_cycle > 0:
            names.append("cycle_loss")
        names += ["decoder_loss", "latent_regression_loss"]
        if self.diversity == "dmit":
            names.append("diversity_loss")
        elif self.diversity in ("ms", "clusters"):
            names.append("mode_seeking_loss")
        if self.diversity == "clusters":
            names += ["cluster_mean_loss", "mahalanobis_loss"]
        names.append("content_reconstruction_loss")
        return names

    @property
    def metrics(self):
        # Listing the trackers here makes fit()/evaluate() reset them every epoch and log them.
        return list(self._trackers.values())

    @property
    def feature_extractor(self):
        """The frozen feature extractor E of diversity='clusters' (not tracked)."""
        return self._extractor.value

    @property
    def image_discriminators(self):
        """{"prior": D_prior, "encoded": D_enc}; the same object twice when shared."""
        encoded = self.prior_discriminator if self.share_discriminator else (
            self.encoded_discriminator)
        return {"prior": self.prior_discriminator, "encoded": encoded}

    def variable_sets(self):
        """The trainable variables each optimizer updates, keyed by optimizer name."""
        generator_vars = (self.generator.trainable_variables
                          + self.style_encoder.trainable_variables
                          + self.content_encoder.trainable_variables)
        sets = {
            "content_d_optimizer": self.content_discriminator.trainable_variables,
            "prior_d_optimizer": self.prior_discriminator.trainable_variables,
            "generator_optimizer": generator_vars,
        }
        if not self.share_discriminator:
            sets["encoded_d_optimizer"] = self.encoded_discriminator.trainable_variables
        return sets

    @property
    def optimizers(self):
        """The compiled optimizers keyed by name (None before `compile`)."""
        return None if self._optimizers is None else dict(self._optimizers)

    def compile(self, content_d_optimizer=None, prior_d_optimizer=None, encoded_d_optimizer=None,
                generator_optimizer=None, **kwargs):
        """Sets one optimizer per variable set and builds each on its own variables.

        Pass the optimizers by name, or a dict of them as the first argument (e.g.
        `make_optimizers()`). Building here (inside the user's `tf.distribute` scope, before
        `fit`) binds each Keras optimizer to its variable set. `generator_optimizer` is also
        Keras's `optimizer`, so callbacks report its learning rate and iterations.

        Args:
            content_d_optimizer: updates the content discriminator.
            prior_d_optimizer: updates the prior-style image discriminator (both image
                discriminator updates when `share_discriminator=True`).
            encoded_d_optimizer: updates the encoded-style image discriminator; omit it when
                shared.
            generator_optimizer: the full generator step (decoder + both encoders), and also
                the decoder-only and content-encoder-only steps, which apply it to a subset of
                its variables (as DMIT steps those networks' optimizers a second time).
            **kwargs: further `keras.Model.compile` arguments (e.g. `jit_compile`,
                `steps_per_execution`); `loss` and `metrics` are not used.
        """
        given = dict(content_d_optimizer=content_d_optimizer, prior_d_optimizer=prior_d_optimizer,
                     encoded_d_optimizer=encoded_d_optimizer,
                     generator_optimizer=generator_optimizer)
        if isinstance(content_d_optimizer, dict):
            if any(v is not None for k, v in given.items() if k != "content_d_optimizer"):
                raise ValueError(
                    "Pass the optimizers either as one dict or by name, not both.")
            unknown = sorted(set(content_d_optimizer) - set(OPTIMIZER_NAMES))
            if unknown:
                raise ValueError(
                    f"Unknown optimizer name(s) {unknown}; expected {list(OPTIMIZER_NAMES)}.")
            given = {name: content_d_optimizer.get(name) for name in OPTIMIZER_NAMES}
        sets = self.variable_sets()
        if self.share_discriminator and given["encoded_d_optimizer"] is not None:
            raise ValueError(
                "encoded_d_optimizer must be omitted with share_discriminator=True: "
                "prior_d_optimizer updates the shared image discriminator.")
        missing = [name for name in sets if given[name] is None]
        if missing:
            raise ValueError(f"compile needs an optimizer for each of {missing}.")
        chosen = {name: given[name] for name in sets}
        if len({id(o) for o in chosen.values()}) != len(chosen):
            raise ValueError(
                "Every optimizer must be a separate instance: a Keras optimizer is bound to the "
                "variables it was built with.")
        for name, optimizer in chosen.items():
            if not optimizer.built:
                optimizer.build(sets[name])
        super().compile(optimizer=chosen["generator_optimizer"], **kwargs)
        self._optimizers = chosen

    def call(self, inputs, training=False):
        """G(E_c(image), label, style) for {"image", "label", optional "style", "cluster"}.

        Style 0 (the prior's mean) when absent; cluster 0 when absent and the generator is
        cluster-conditioned. Lets Keras and `tf.distribute` trace and build the model; use
        `translate` and `sample` for inference.
        """
        images = tf.cast(tf.convert_to_tensor(inputs["image"]), tf.float32)
        count = tf.shape(images)[0]
        style = inputs.get("style")
        if style is None:
            style = tf.zeros([count, self.style_dim])
        onehot = None
        if self.num_clusters:
            cluster = inputs.get("cluster")
            cluster = tf.zeros([count], tf.int32) if cluster is None else cluster
            onehot = tf.one_hot(tf.reshape(tf.cast(cluster, tf.int32), [-1]), self.num_clusters)
        content = self.content_encoder(images, training=training)
        labels = self._labels(inputs["label"], count)
        return self._decode(content, labels, style, onehot, training=training)

    # -- pieces shared by train_step and test_step ----------------------------------------------

    def _labels(self, labels, count):
        labels = tf.cast(tf.convert_to_tensor(labels), tf.float32)
        return tf.broadcast_to(tf.reshape(labels, [-1, self.label_dim]), [count, self.label_dim])

    def _unpack(self, data):
        """The paired batch as DMIT's concatenated one (module docstring)."""
        keys = {"image_a", "label_a", "image_b", "label_b"}
        if self.num_clusters:
            keys |= {"cluster_a", "cluster_b"}
        if not isinstance(data, dict) or not keys <= set(data):
            raise ValueError(
                f"Each batch must be a dict with keys {sorted(keys)}, got "
                f"{type(data).__name__} {sorted(data) if isinstance(data, dict) else ''}.")
        x = tf.concat([tf.cast(data["image_a"], tf.float32),
                       tf.cast(data["image_b"], tf.float32)], axis=0)
        c_src = tf.concat([tf.cast(data["label_a"], tf.float32),
                           tf.cast(data["label_b"], tf.float32)], axis=0)
        batch = {"x": x, "c_src": c_src, "c_tgt": _swap(c_src),
                 "k_src": None, "k_tgt": None, "id_tgt": None}
        if self.num_clusters:
            ids = tf.concat([tf.reshape(tf.cast(data["cluster_a"], tf.int32), [-1]),
                             tf.reshape(tf.cast(data["cluster_b"], tf.int32), [-1])], axis=0)
            batch["k_src"] = tf.one_hot(ids, self.num_clusters)
            batch["id_tgt"] = _swap(ids)
            batch["k_tgt"] = tf.one_hot(batch["id_tgt"], self.num_clusters)
        return batch

    def _noise(self, batch_size, stream=0):
        """ε, z1, z2 [batch_size, style_dim] from (seed, stream, step): this replica's rows of
        the global batch's draw (`distribution.replica_normal`).

        Reproducible for a seed, new at every step, different on every replica of a
        distributed step, and the same for a global batch however many replicas share it: the
        batch is the A half then the B half (`_unpack`), each drawn as one group. Prior styles
        are N(0, I) (DMIT: N(0, weight_target²), weight 1).
        """
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, stream], tf.int64), tf.convert_to_tensor(self.step_counter))
        # Folding in 0 (once the replica id) keeps the draws of earlier single-device runs.
        seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(0, tf.int64))
        return {name: distribution.replica_normal(
                    batch_size // 2, self.style_dim, seed=tf.random.experimental.stateless_fold_in(seed, index),
                    groups=2)
                for index, name in enumerate(("eps", "z1", "z2"))}

    def _decode(self, content, label, style, onehot, training):
        """G's images as float32 whatever its compute dtype (float16 under mixed precision), so
        they concatenate with real images and reach the losses in full precision."""
        inputs = {"content": content, "label": label, "style": style}
        if self.num_clusters:
            inputs["cluster_onehot"] = onehot
        return tf.cast(self.generator(inputs, training=training), tf.float32)

    def _encode_style(self, images, noise, training):
        """[style, μ, logvar] of E_s as float32 (they join the float32 prior styles z)."""
        return [tf.cast(t, tf.float32)
                for t in self.style_encoder({"image": images, "noise": noise}, training=training)]

    def _judge(self, discriminator, images, labels, onehot, training):
        inputs = {"image": images, "label": labels}
        if self.num_clusters:
            inputs["cluster_onehot"] = onehot
        return discriminator(inputs, training=training)

    def _cat(self, *tensors):
        """Concatenates along the batch; None when the tensors are None (no clusters)."""
        if tensors[0] is None:
            return None
        return tf.concat(tensors, axis=0)

    def _is_colour(self, labels):
        """1 for the rows whose label marks a colour image (all rows without `colour_label_index`)."""
        if self.colour_label_index is None:
            return tf.ones([tf.shape(labels)[0]], tf.float32)
        return tf.cast(labels[:, self.colour_label_index] > 0.5, tf.float32)

    def _features(self, images):
        extractor = self.feature_extractor
        if isinstance(extractor, keras.layers.Layer):
            return extractor(images, training=False)
        return extractor(images)

    def _replica_scale(self):
        # Gradients are summed over replicas; a per-replica mean loss must be divided by them.
        return tf.constant(1.0 / tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)

    def _discriminator_inputs(self, batch, noise):
        """What the discriminators judge: E_c(x) and the prior- and encoded-style fakes.

        Made with every generator network in inference mode (no spectral-norm write-back),
        before any update of the step, and cut from the graph.

        Returns:
            (content, fake_prior, fake_encoded).
        """
        x, c_tgt = batch["x"], batch["c_tgt"]
        content = self.content_encoder(x, training=False)
        style = self._encode_style(x, noise["eps"], training=False)[0]
        fakes = self._decode(tf.concat([content, content], 0), tf.concat([c_tgt, c_tgt], 0),
                             tf.concat([noise["z1"], _swap(style)], 0),
                             self._cat(batch["k_tgt"], batch["k_tgt"]), training=False)
        fake_prior, fake_encoded = _split(fakes, 2)
        return (tf.stop_gradient(content), tf.stop_gradient(fake_prior),
                tf.stop_gradient(fake_encoded))

    def _content_d_losses(self, batch, content, training):
        """LSGAN loss of D_c: (content, c_src) is real, the same content with c_tgt is fake."""
        logits = self.content_discriminator({
            "content": tf.concat([content, content], 0),
            "label": tf.concat([batch["c_src"], batch["c_tgt"]], 0)}, training=training)
        real, fake = _split(logits, 2)
        return {"d_content_loss": L.least_squares_discriminator_loss(real, fake)}

    def _image_d_loss(self, discriminator, batch, fake, training):
        """Hinge loss of one image D: real (x, c_src); fakes (G, c_tgt) and (x, c_tgt), ½ each."""
        x = batch["x"]
        logits = self._judge(
            discriminator, tf.concat([x, x, fake], 0),
            tf.concat([batch["c_src"], batch["c_tgt"], batch["c_tgt"]], 0),
            self._cat(batch["k_src"], batch["k_tgt"], batch["k_tgt"]), training=training)
        real, wrong_label, generated = zip(*[_split(scale, 3) for scale in logits])
        return L.hinge_discriminator_loss(list(real), list(generated),
                                          extra_fake_logits=[list(wrong_label)])

    def _generator_losses(self, batch, noise, training):
        """Every term of the full generator step, unweighted, and their weighted sum "g_loss".

        The discriminators are called with training=False (their spectral normalisation would
        otherwise rewrite their kernels during the generator's step).
        """
        x, c_src, c_tgt = batch["x"], batch["c_src"], batch["c_tgt"]
        content = self.content_encoder(x, training=training)
        style, mu, logvar = self._encode_style(x, noise["eps"], training=training)
        fakes = self._decode(
            tf.concat([content] * 3, 0), tf.concat([c_src, c_tgt, c_tgt], 0),
            tf.concat([style, _swap(style), noise["z1"]], 0),
            self._cat(batch["k_src"], batch["k_tgt"], batch["k_tgt"]), training=training)
        reconstruction, fake_encoded, fake_prior = _split(fakes, 3)
        discriminators = self.image_discriminators
        g_prior = L.hinge_generator_loss(self._judge(
            discriminators["prior"], fake_prior, c_tgt, batch["k_tgt"], training=False))
        g_encoded = L.hinge_generator_loss(self._judge(
            discriminators["encoded"], fake_encoded, c_tgt, batch["k_tgt"], training=False))
        g_content = L.least_squares_generator_loss(self.content_discriminator(
            {"content": content, "label": c_tgt}, training=False))
        losses = {
            "g_prior_loss": g_prior, "g_encoded_loss": g_encoded, "g_content_loss": g_content,
            "reconstruction_loss": L.l1_reconstruction_loss(reconstruction, x),
            "kl_loss": L.kl_divergence_loss(mu, logvar),
        }
        mean_terms = (self.lambda_adversarial * (g_prior + g_encoded + g_content)
                      + self.lambda_reconstruction * losses["reconstruction_loss"])
        if self.lambda_cycle > 0:
            cycled = self._decode(self.content_encoder(fake_prior, training=training), c_src,
                                  style, batch["k_src"], training=training)
            losses["cycle_loss"] = L.l1_reconstruction_loss(cycled, x)
            mean_terms += self.lambda_cycle * losses["cycle_loss"]
        summed_terms = self.lambda_kl * losses["kl_loss"]
        losses["g_loss"] = mean_terms + summed_terms
        # What is differentiated: per-replica means over replicas, the KL summed (class doc).
        objective = mean_terms * self._replica_scale() + summed_terms
        return losses, objective

    def _decoder_losses(self, batch, noise, training):
        """Latent regression and the diversity terms: the decoder-only step's losses.

        The encoders are called in inference mode; the latent regression compares the style
        encoder's MEAN on G(x, c_tgt, z1) with z1, as DMIT does.
        """
        x, c_tgt = batch["x"], batch["c_tgt"]
        z1, z2 = noise["z1"], noise["z2"]
        draws = 1 if self.diversity == "none" else 2
        content = self.content_encoder(x, training=False)
        fakes = self._decode(tf.concat([content] * draws, 0), tf.concat([c_tgt] * draws, 0),
                             tf.concat([z1, z2][:draws], 0),
                             self._cat(*[batch["k_tgt"]] * draws), training=training)
        fake_1 = fakes[:tf.shape(x)[0]]
        mu = self.style_encoder.encode(fake_1, training=False)[1]
        latent = tf.reduce_mean(tf.abs(tf.cast(mu, tf.float32) - z1))
        losses = {"latent_regression_loss": latent}
        total = self.lambda_latent * latent
        if draws == 2:
            fake_2 = fakes[tf.shape(x)[0]:]
            if self.diversity == "dmit":
                losses["diversity_loss"] = L.dmit_diversity_loss(fake_1, fake_2, z1, z2)
                total += self.lambda_diversity * losses["diversity_loss"]
            else:
                losses["mode_seeking_loss"] = L.mode_seeking_loss(fake_1, fake_2, z1, z2)
                total += self.lambda_ms * losses["mode_seeking_loss"]
        if self.diversity == "clusters":
            features = tf.cast(self._features(fakes), tf.float32)
            ids = tf.concat([batch["id_tgt"]] * draws, 0)
            # The clusters describe colour images: fakes in an edge domain are left out.
            colour = tf.concat([self._is_colour(c_tgt)] * draws, 0)
            l_d = L.cluster_mean_loss(features, self.cluster_means, ids, sample_weight=colour)
            l_m = L.mahalanobis_loss(features, self.cluster_means, self.inverse_covariances,
                                     self.feature_masks, ids, sample_weight=colour)
            # A tensor comparison, so that switching L_m on does not retrace the step.
            gate = tf.cast(
                tf.convert_to_tensor(self.step_counter) >= self.mahalanobis_warmup_steps,
                tf.float32)
            losses["cluster_mean_loss"] = l_d
            losses["mahalanobis_loss"] = l_m
            total += self.lambda_d * l_d + gate * self.lambda_m * l_m
        losses["decoder_loss"] = total
        return losses, total * self._replica_scale()

    def _content_encoder_losses(self, batch, noise, training):
        """Content reconstruction mean|E_c(x) − E_c(G(E_c(x), c_tgt, z1))| (both E_c paths)."""
        x = batch["x"]
        content = self.content_encoder(x, training=training)
        fake = self._decode(content, batch["c_tgt"], noise["z1"], batch["k_tgt"],
                            training=False)
        content_rec = self.content_encoder(fake, training=training)
        loss = L.l1_reconstruction_loss(content_rec, content)
        return ({"content_reconstruction_loss": loss},
                self.lambda_content * loss * self._replica_scale())

    def compute_losses(self, data, training=False, stream=1):
        """Every loss of one batch without updating anything (what `test_step` logs).

        Args:
            data: a batch dict (see the class docstring).
            training: run the networks in training mode (spectral normalisation then updates
                their kernels).
            stream: random stream of ε and z (training uses 0).

        Returns:
            Dict of scalar tensors, keyed like the loss trackers.
        """
        batch = self._unpack(data)
        noise = self._noise(tf.shape(batch["x"])[0], stream=stream)
        content, fake_prior, fake_encoded = self._discriminator_inputs(batch, noise)
        discriminators = self.image_discriminators
        losses = self._content_d_losses(batch, content, training)
        losses["d_prior_loss"] = self._image_d_loss(
            discriminators["prior"], batch, fake_prior, training)
        losses["d_encoded_loss"] = self._image_d_loss(
            discriminators["encoded"], batch, fake_encoded, training)
        for compute in (self._generator_losses, self._decoder_losses,
                        self._content_encoder_losses):
            losses.update(compute(batch, noise, training)[0])
        return losses

    # -- training --------------------------------------------------------------------------------

    def _require_compiled(self):
        if self._optimizers is None:
            raise ValueError("Call compile(...) with the optimizers before training.")

    def _update(self, optimizer_name, variables, compute):
        """One optimizer step on `variables` for the objective `compute()` returns.

        The tape watches only `variables`: every other network on the loss path is a constant
        here, so no gradient is ever computed for it.

        Returns:
            The losses dict of `compute()`.
        """
        optimizer = self._optimizers[optimizer_name]
        watched = _tf_variables(variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(watched)
            losses, objective = compute()
            objective = optimizer.scale_loss(objective)
        gradients = tape.gradient(objective, watched)
        optimizer.apply_gradients(zip(gradients, variables))
        return losses

    def _content_d_step(self, batch, content):
        """Updates D_c only (content_d_optimizer); `content` is E_c(x), detached."""
        self._require_compiled()
        content = tf.stop_gradient(content)

        def compute():
            losses = self._content_d_losses(batch, content, training=True)
            return losses, losses["d_content_loss"] * self._replica_scale()

        return self._update("content_d_optimizer",
                            self.content_discriminator.trainable_variables, compute)

    def _image_d_steps(self, batch, fake_prior, fake_encoded):
        """Updates D_prior on the prior-style fakes, then D_enc on the encoded-style ones.

        With `share_discriminator` both updates go to the one D through prior_d_optimizer.
        """
        self._require_compiled()
        losses = {}
        steps = (("prior", fake_prior, "prior_d_optimizer"),
                 ("encoded", fake_encoded,
                  "prior_d_optimizer" if self.share_discriminator else "encoded_d_optimizer"))
        for kind, fake, optimizer_name in steps:
            discriminator = self.image_discriminators[kind]
            fake = tf.stop_gradient(fake)

            def compute(discriminator=discriminator, fake=fake, kind=kind):
                loss = self._image_d_loss(discriminator, batch, fake, training=True)
                return {f"d_{kind}_loss": loss}, loss * self._replica_scale()

            losses.update(self._update(optimizer_name, discriminator.trainable_variables,
                                       compute))
        return losses

    def _generator_step(self, batch, noise):
        """Updates the decoder and both encoders together (generator_optimizer)."""
        self._require_compiled()
        return self._update("generator_optimizer",
                            self.variable_sets()["generator_optimizer"],
                            lambda: self._generator_losses(batch, noise, training=True))

    def _decoder_step(self, batch, noise):
        """Updates the decoder only (generator_optimizer on the decoder's variables): latent
        regression + diversity."""
        self._require_compiled()
        return self._update("generator_optimizer", self.generator.trainable_variables,
                            lambda: self._decoder_losses(batch, noise, training=True))

    def _content_encoder_step(self, batch, noise):
        """Updates the content encoder only (generator_optimizer on its variables)."""
        self._require_compiled()
        return self._update("generator_optimizer",
                            self.content_encoder.trainable_variables,
                            lambda: self._content_encoder_losses(batch, noise, training=True))

    def _record(self, losses):
        for name, tracker in self._trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        self._require_compiled()
        batch = self._unpack(data)
        noise = self._noise(tf.shape(batch["x"])[0], stream=0)
        content, fake_prior, fake_encoded = self._discriminator_inputs(batch, noise)
        # DMIT's order: D_c, D_prior, D_enc, full G, decoder only, content encoder only.
        losses = self._content_d_step(batch, content)
        losses.update(self._image_d_steps(batch, fake_prior, fake_encoded))
        losses.update(self._generator_step(batch, noise))
        losses.update(self._decoder_step(batch, noise))
        losses.update(self._content_encoder_step(batch, noise))
        self.step_counter.assign_add(1)
        return self._record(losses)

    def test_step(self, data):
        return self._record(self.compute_losses(data, training=False))

    # -- inference -------------------------------------------------------------------------------

    def draw_clusters(self, num, seed=0):
        """Cluster ids drawn with probability equal to the cluster shares (test-time rule).

        Args:
            num: number of ids (int or scalar tensor).
            seed: integer seed; the same seed gives the same ids.

        Returns:
            int32 tensor [num].
        """
        return cluster_conditioning.draw_clusters(self.cluster_shares, num, seed, stream=7)

    def _cluster_onehot(self, clusters, count, seed):
        if not self.num_clusters:
            if clusters is not None:
                raise ValueError("clusters must be None: the generator is not cluster-conditioned.")
            return None
        if clusters is None:
            ids = self.draw_clusters(count, seed)
        else:
            ids = tf.broadcast_to(tf.reshape(tf.cast(clusters, tf.int32), [-1]), [count])
        return tf.one_hot(ids, self.num_clusters)

    def translate(self, content_images, reference_images, target_labels, clusters=None, seed=0):
        """Content of `content_images`, style encoded from `reference_images`, target labels.

        DMIT's "enc" translation (`s2w_enc`): style translation A→B is
        `translate(A, B, label_B)`; content translation is `translate(B, A, label_B)`. The
        style is the encoder's mean (deterministic).

        Args:
            content_images: float [N, S, S, C] in [−1, 1].
            reference_images: float [N, S', S', C] in [−1, 1] (one reference per content image).
            target_labels: float [N, label_dim] or one label [label_dim] for all.
            clusters: cluster id(s) for a cluster-conditioned generator; None draws them from
                the cluster shares with `seed`.
            seed: seed of the cluster draw.

        Returns:
            float32 [N, S, S, C] in [−1, 1].
        """
        content_images = tf.cast(tf.convert_to_tensor(content_images), tf.float32)
        count = tf.shape(content_images)[0]
        style = self.style_encoder.encode(reference_images, training=False)[1]
        content = self.content_encoder(content_images, training=False)
        return self._decode(content, self._labels(target_labels, count), style,
                            self._cluster_onehot(clusters, count, seed), training=False)

    def sample(self, content_images, target_labels, seed=0, num_samples=1, clusters=None):
        """`num_samples` translations per image with styles from the prior N(0, I).

        Column j of every row uses the same style z_j, drawn from `seed` alone, so the output
        for an image does not depend on the rest of the batch and the same seed gives the same
        images (DMIT's `*_rand_j`, A→A and B→B with a same-domain label).

        Args:
            content_images: float [N, S, S, C] in [−1, 1].
            target_labels: float [N, label_dim] or one label [label_dim].
            seed: integer seed of the styles (and of the cluster draw).
            num_samples: styles per image.
            clusters: cluster id(s) for a cluster-conditioned generator; None draws one per
                output from the cluster shares.

        Returns:
            float32 [N, num_samples, S, S, C] in [−1, 1].
        """
        if isinstance(seed, (int, np.integer)):
            _positive_int(seed, "seed", 0)
        if isinstance(num_samples, (int, np.integer)):
            _positive_int(num_samples, "num_samples")
        content_images = tf.cast(tf.convert_to_tensor(content_images), tf.float32)
        count = tf.shape(content_images)[0]
        num_samples = tf.cast(num_samples, tf.int32)
        styles = tf.random.stateless_normal(
            [num_samples, self.style_dim],
            seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(3, tf.int64)]))
        total = count * num_samples
        content = tf.repeat(self.content_encoder(content_images, training=False), num_samples,
                            axis=0)
        labels = tf.repeat(self._labels(target_labels, count), num_samples, axis=0)
        onehot = None
        if self.num_clusters and clusters is not None:
            ids = tf.broadcast_to(tf.reshape(tf.cast(clusters, tf.int32), [-1]), [count])
            onehot = tf.one_hot(tf.repeat(ids, num_samples, axis=0), self.num_clusters)
        else:
            onehot = self._cluster_onehot(clusters, total, seed)
        images = self._decode(content, labels, tf.tile(styles, [count, 1]), onehot,
                              training=False)
        return tf.reshape(images, tf.concat([[count, num_samples], tf.shape(images)[1:]], 0))
