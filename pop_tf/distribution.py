"""`tf.distribute` for the training stages: the strategy a config's `distribute` names, and
which worker writes.

`distribute` (train_ranker, train_translator, cluster):
- `none`: TensorFlow's default strategy, one device (what every stage did before this option).
- `mirrored`: `MirroredStrategy` over every local GPU; on a machine without GPUs, over every
  logical CPU device (one unless `tf.config.set_logical_device_configuration` split the CPU,
  which is how the tests run two replicas on one host).
- `multi_worker`: `MultiWorkerMirroredStrategy`, one process per host (each may hold several
  GPUs), the cluster read from the `TF_CONFIG` environment variable. Every worker runs the same
  command; the chief (task `chief`, else `worker` 0) alone writes the stage's outputs, the
  others write theirs into a temporary folder removed when the stage ends (`worker_output`).
  The output folder must be one every worker reads (a shared file system), since all of them
  resume from the chief's checkpoints.
- `tpu`: `TPUStrategy` on the TPU `TPUClusterResolver` finds (a Cloud TPU VM or `TPU_NAME`);
  not tested here, and a clear error where there is no TPU.

The batch size in the config is the global batch: `fit()` splits each batch over the replicas,
and the trainers divide their per-replica mean losses by the number of replicas, since the
replicas' gradients are summed.
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile

from pop_tf.errors import PopTfError

log = logging.getLogger(__name__)

KINDS = ("none", "mirrored", "multi_worker", "tpu")


class DistributionError(PopTfError):
    """The strategy `distribute` names cannot be set up here."""


def make_strategy(kind: str, stage: str):
    """The `tf.distribute.Strategy` of `<stage>.distribute = kind` (see the module docstring)."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        log.info("%s: MirroredStrategy over %s", stage, ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multi_worker":
        raw = os.environ.get("TF_CONFIG", "")
        try:
            spec = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise DistributionError(f"{stage}.distribute=multi_worker: TF_CONFIG is not JSON ({e})") from None
        if not spec or "cluster" not in spec or "task" not in spec:
            raise DistributionError(
                f"{stage}.distribute=multi_worker reads the cluster from the TF_CONFIG environment variable, "
                "which is unset or lacks 'cluster'/'task'; set it on every worker, e.g. TF_CONFIG="
                '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\'')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise DistributionError(
                f"{stage}.distribute=tpu: no TPU found ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); "
                f"run on a Cloud TPU VM (or set TPU_NAME), or set {stage}.distribute to none, mirrored or "
                "multi_worker") from None
        return tf.distribute.TPUStrategy(resolver)
    raise DistributionError(f"config key '{stage}.distribute': {kind!r} is not one of {', '.join(KINDS)}")


def is_chief(strategy) -> bool:
    """Whether this process writes the stage's outputs: always, except a non-chief worker of a
    multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or task_type is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    if task_type == "chief":
        return True
    # Without a "chief" task, worker 0 is the chief (TensorFlow's convention).
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


@contextlib.contextmanager
def worker_output(output: str, strategy, stage: str):
    """The folder this process writes the stage's outputs into: `output` on the chief, a
    temporary folder elsewhere, removed on leaving (however the stage ends).

    Non-chief workers still write: saving a checkpoint or a SavedModel of distributed variables
    can take collective ops every worker must join, so each runs the same code into its own folder.
    """
    if is_chief(strategy):
        yield output
        return
    scratch = tempfile.mkdtemp(prefix=f"pop_tf-{stage}-worker-")
    log.info("%s: not the chief worker; writing into %s (removed at the end)", stage, scratch)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def replica_normal(rows, columns: int, seed, groups: int = 1):
    """N(0, 1) noise [groups·rows, columns] for this replica's `rows` examples: its rows of ONE
    stateless draw [groups, replicas·rows, columns] over the global batch.

    A step on R replicas then uses the noise a step on one replica draws for the same global
    batch (each replica's batch is its slice of the global one, in order), so the number of
    replicas does not change what is trained, and each replica still gets its own noise. On
    one replica this is `stateless_normal([groups·rows, columns], seed)`.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    index = tf.cast(context.replica_id_in_sync_group, tf.int32) if context is not None else 0
    rows = tf.cast(rows, tf.int32)
    draw = tf.random.stateless_normal([groups, replicas * rows, columns], seed=seed)
    if replicas > 1:
        draw = draw[:, index * rows:(index + 1) * rows]
    return tf.reshape(draw, [groups * rows, columns])
