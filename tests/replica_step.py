"""One training step on one replica and on two (MirroredStrategy over 2 logical CPUs), same
global batch and initial weights: prints {model: {"init": max |w1 − w2| before, "diff": max
|Δw1 − Δw2| over every weight, "step": max |Δw1| over the trainable ones}}.

Run as its own process (`python tests/replica_step.py ranker dmit pix2pix`): the CPU must be
split into logical devices before TensorFlow initialises, which a pytest process has done long
before. SGD, not Adam: Adam's first step is about lr·sign(g), blind to a gradient off by the
number of replicas.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pop_tf import distribution  # noqa: E402
from pop_tf.models import ranker as ranker_lib  # noqa: E402
from pop_tf.stages import train_translator  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

BATCH = 4  # the global batch: 2 per replica


def _batch(model: str) -> dict:
    rng = np.random.default_rng(1)
    images = lambda: rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    if model == "ranker":
        return {"image_a": images(), "image_b": images(), "target": rng.integers(0, 2, BATCH).astype(np.float32)}
    if model == "dmit":
        signed = lambda: (images().astype(np.float32) / 127.5 - 1.0)  # noqa: E731
        labels = np.eye(4, dtype=np.float32)
        return {"image_a": signed(), "label_a": labels[[0, 1, 0, 1]], "image_b": signed(),
                "label_b": labels[[2, 3, 3, 2]]}
    return {"edge": images(), "image": images(), "cluster": np.zeros([BATCH], np.int64)}


def _build(model: str):
    sgd = lambda: keras.optimizers.SGD(0.05)  # noqa: E731
    keras.utils.set_random_seed(0)
    if model == "ranker":
        ranker = ranker_lib.build_ranker("small", "none", 32, 4)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            ranker_lib.synchronize_batch_norm(ranker)
        trainer = ranker_lib.SiameseRankerTrainer(ranker)
        trainer.compile(sgd(), sgd())
        trainer.build_optimizers()
        return trainer, ranker
    # Two discriminator layers: with three, 32-px images leave pix2pix's second scale a patch of 0.
    # DMIT's own diversity term is a ratio of batch means, which each replica takes over its
    # slice (as the official code over a GPU's batch): the one term a split changes, so off here.
    cfg = tiny_config(f"train_translator.model={model}", "train_translator.pix2pix_image_d_blocks=2",
                      "train_translator.lambda_diversity=0").train_translator
    if model == "dmit":
        trainer = train_translator.build_dmit(cfg, total_steps=10)
        trainer.compile({name: sgd() for name in trainer_optimizer_names(cfg)})
        return trainer, trainer
    trainer = train_translator._build_pix2pix(cfg, 1, {}, total_steps=10)
    trainer.compile(sgd(), sgd())
    return trainer, trainer


def trainer_optimizer_names(cfg):
    from pop_tf.models import dmit_trainer
    return list(dmit_trainer.make_optimizers(1e-4, share_discriminator=cfg.share_discriminator))


def one_step(model: str, strategy):
    """(weights before, their change after one step) of a model built under `strategy`."""
    with strategy.scope():
        trainer, weighted = _build(model)
    names = [v.path for v in weighted.weights]
    trainable = {id(v) for v in weighted.trainable_weights}
    moved = [id(v) in trainable for v in weighted.weights]
    before = [np.array(w) for w in weighted.get_weights()]
    trainer.fit(tf.data.Dataset.from_tensors(_batch(model)), epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    after = [np.array(w) for w in weighted.get_weights()]
    if len(after) != len(before):
        raise AssertionError(f"{model}: fit() created variables ({len(before)} -> {len(after)})")
    return before, [a - b for a, b in zip(after, before)], names, moved


def main(models):
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = distribution.make_strategy("mirrored", "test")
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    result = {}
    for model in models:
        before_1, step_1, names, trainable = one_step(model, single)
        before_2, step_2, _, _ = one_step(model, mirrored)
        worst = max((float(np.max(np.abs(a - b), initial=0)), n) for a, b, n in zip(step_1, step_2, names))
        print(model, "largest difference:", worst, file=sys.stderr)
        result[model] = {
            "init": max(float(np.max(np.abs(a - b), initial=0)) for a, b in zip(before_1, before_2)),
            "diff": max(float(np.max(np.abs(a - b), initial=0)) for a, b in zip(step_1, step_2)),
            # How far the step moved the trainable weights (a counter moves by 1 either way).
            "step": max(float(np.max(np.abs(a), initial=0)) for a, t in zip(step_1, trainable) if t)}
        print(model, result[model], file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
