"""Compute precision of the networks: float32, mixed float16 or mixed bfloat16, and `auto`.

Every stage that runs a network takes `mixed_precision`, one of `PRECISIONS`:
- `none`: float32 throughout.
- `float16`: Keras's `mixed_float16` policy (float16 compute, float32 variables) and a
  `LossScaleOptimizer` per optimizer, because float16 gradients of small losses underflow.
- `bfloat16`: Keras's `mixed_bfloat16` policy. bfloat16 has float32's exponent range, so no
  loss scaling; oneDNN runs its matmuls and convolutions about twice as fast as float32's on a
  CPU with AVX512_BF16 or AMX (measured in docs/performance.md).
- `auto`: float16 where a GPU is visible, bfloat16 on a CPU that runs it fast, else float32
  (`resolve`). A stage resolves `auto` before it writes its config.json, so the file names the
  policy the run really used.

What stays float32 whatever the policy: variables and optimizer state (the mixed policies keep
them so), losses, logits and scores (the networks cast their outputs), instance/layer
normalisation statistics (`pop_tf.layers.normalization`) and spectral-norm power iterations
(`pop_tf.layers.spectral`).
"""

import contextlib
import functools
import logging
import time

log = logging.getLogger(__name__)

PRECISIONS = ("none", "float16", "bfloat16", "auto")
KERAS_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# CPU flags under which oneDNN has native bfloat16 matmul/conv kernels (Linux /proc/cpuinfo names).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# `auto` takes bfloat16 only when the probe's bfloat16 matmul beats float32's by this factor:
# flags can be present on a machine (or in a VM) where the kernels still run emulated.
MIN_BFLOAT16_SPEEDUP = 1.3
PROBE_SIZE = 1024
PROBE_REPEATS = 5


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags (empty where the file is missing, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _median_matmul_seconds(dtype: str, size: int = PROBE_SIZE, repeats: int = PROBE_REPEATS) -> float:
    import tensorflow as tf

    with tf.device("/CPU:0"):
        a = tf.cast(tf.random.stateless_normal([size, size], seed=[0, 1]), dtype)
        matmul = tf.function(lambda x: tf.matmul(x, x))
        matmul(a).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a).numpy()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bfloat16_speedup() -> float:
    """float32 / bfloat16 time of a 1024² matmul on this CPU (about 0.1 s to measure)."""
    return _median_matmul_seconds("float32") / _median_matmul_seconds("bfloat16")


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose(gpu: bool, flags, speedup) -> str:
    """`auto`'s decision: float16 on a GPU; bfloat16 on a CPU with native bfloat16 kernels whose
    measured speed-up (`speedup()`, called only then) reaches `MIN_BFLOAT16_SPEEDUP`; else none."""
    if gpu:
        return "float16"
    if not set(flags) & set(BFLOAT16_CPU_FLAGS):
        return "none"
    return "bfloat16" if speedup() >= MIN_BFLOAT16_SPEEDUP else "none"


@functools.lru_cache(maxsize=None)
def _auto() -> str:
    chosen = choose(gpu_available(), cpu_flags(), bfloat16_speedup)
    log.info("mixed_precision=auto: %s", chosen)
    return chosen


def resolve(requested: str) -> str:
    """The concrete policy (`none`, `float16` or `bfloat16`) for a `mixed_precision` setting.

    Raises:
        ValueError: `requested` is not one of `PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    return _auto() if requested == "auto" else requested


@contextlib.contextmanager
def policy(precision: str):
    """Keras's global dtype policy for `precision` inside the block (`auto` is resolved).

    Layers take the global policy when they are constructed, so models built inside compute in
    the mixed dtype with float32 variables; the previous policy is restored on exit, because one
    process may go on to build other stages' models. With `none` nothing changes.
    """
    import keras

    name = KERAS_POLICIES.get(resolve(precision))
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scaled(optimizer, precision: str):
    """`optimizer` wrapped in a `keras.optimizers.LossScaleOptimizer` under float16 only.

    float16 gradients of small losses underflow to zero; the wrapper keeps a dynamic loss scale
    that the train step applies with `optimizer.scale_loss(loss)`, and its `apply` unscales the
    gradients (skipping the update and halving the scale when they are not finite). A plain
    optimizer's `scale_loss` returns the loss unchanged, so one train step serves every policy.
    """
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer) if resolve(precision) == "float16" else optimizer
