"""What every training stage shares around `fit()`: checkpoints, resume, NaN stop, schedules.

- `restore_newest` restores the newest readable checkpoint of a `tf.train.CheckpointManager`
  (a corrupt newest one falls back to the one before), so a killed run continues its step count;
  when none fits the model it stops instead of training over them, naming the changed settings.
- `TrainingCallbacks` stops at the first non-finite loss *before* anything saves the bad
  weights, saves a checkpoint every N steps, and ends a resumed run exactly at the planned step.
- `ConstantThenLinearDecay` is DMIT's schedule (constant, then linear decay to 0).
"""

import contextlib
import math
import sys

import keras
import tensorflow as tf

from pop_tf.errors import PopTfError


class TrainingDivergedError(PopTfError):
    """A loss became NaN or infinite; the message names the step, the loss and the checkpoint."""


class CheckpointMismatchError(PopTfError):
    """The output folder holds checkpoints, but none can be restored into this run's model."""


def restore_newest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager, stage: str,
                   changed_settings=()) -> str:
    """Restores the newest readable checkpoint; returns its path ('' for a fresh start).

    Args:
        checkpoint: what to restore into.
        manager: the run's CheckpointManager (its `checkpoints`, oldest first).
        stage: the stage name messages start with.
        changed_settings: "key: old -> new" lines, the settings this run changed against the run
            that wrote the checkpoints; named in the error when none of them can be restored.

    Raises:
        CheckpointMismatchError: checkpoints exist and none restores. Starting fresh would let
            the manager's rotation delete them, so the run stops and says how to go on.
    """
    last_error = None
    for path in reversed(manager.checkpoints):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
            return path
        # A checkpoint cut short by a crash fails in several ways: a TF op error, a mismatch, or
        # an IndexError from the reader when the data file ends early.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
            last_error = e
            print(f"{stage}: checkpoint {path} is unreadable ({type(e).__name__}); trying the previous one",
                  file=sys.stderr)
    if last_error is None:
        return ""
    folder = manager.directory
    cause = (f"this run changed {'; '.join(changed_settings)}" if changed_settings else
             f"the last error was {type(last_error).__name__}: {str(last_error).splitlines()[0][:200]}")
    raise CheckpointMismatchError(
        f"{stage}: none of the {len(manager.checkpoints)} checkpoints in {folder} fits the model this run "
        f"builds ({cause}). Rerun with the settings that wrote them to resume, or start the stage over: "
        f"delete {folder} (or rerun the pipeline with --from {stage})")


class TrainingCallbacks(keras.callbacks.Callback):
    """NaN stop, checkpoints every `every` steps and a hard stop at `total_steps`.

    Args:
        manager: the run's CheckpointManager.
        step: a callable returning the global step (e.g. an optimizer's `iterations`).
        every: steps between checkpoints.
        total_steps: the planned length of the run.
        losses: the log names to watch for NaN/Inf (default: every logged value).
    """

    def __init__(self, manager, step, every: int, total_steps: int, losses=None):
        super().__init__()
        self.manager, self.step, self.every, self.total_steps = manager, step, every, total_steps
        self.losses = losses
        self.diverged = None  # (step, loss name) once a loss is not finite

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step())
        for name, value in (logs or {}).items():
            if (self.losses is None or name in self.losses) and not math.isfinite(float(value)):
                self.diverged = (step, name)
                self.model.stop_training = True
                return
        if step % self.every == 0:
            self.manager.save(checkpoint_number=step)
        if step >= self.total_steps:
            self.model.stop_training = True

    def raise_if_diverged(self, stage: str, hint: str) -> None:
        if self.diverged is None:
            return
        step, name = self.diverged
        last = self.manager.latest_checkpoint or "none (no checkpoint was written before)"
        raise TrainingDivergedError(
            f"{stage}: the loss '{name}' became NaN or infinite at step {step}; training stopped. "
            f"Last good checkpoint: {last}. {hint} and rerun (it resumes from that checkpoint).")

    def save_final(self) -> None:
        step = int(self.step())
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(f"-{step}"):
            self.manager.save(checkpoint_number=step)


@keras.saving.register_keras_serializable(package="pop_tf")
class ConstantThenLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`rate` for the first `total_steps − decay_steps` steps, then linearly down to 0 (DMIT).

    Args:
        rate: the initial learning rate.
        total_steps: the run's length in steps.
        decay_steps: the steps of linear decay at the end (0: constant throughout).

    Reference:
        DMIT/CycleGAN `lr_policy='linear'`: 100 epochs constant + 100 decaying.
    """

    def __init__(self, rate: float, total_steps: int, decay_steps: int):
        self.rate, self.total_steps, self.decay_steps = float(rate), int(total_steps), int(decay_steps)

    def __call__(self, step):
        if self.decay_steps <= 0:
            return tf.constant(self.rate, tf.float32)
        step = tf.cast(step, tf.float32)
        start = float(self.total_steps - self.decay_steps)
        fraction = tf.clip_by_value((step - start) / float(self.decay_steps), 0.0, 1.0)
        return self.rate * (1.0 - fraction)

    def get_config(self):
        return {"rate": self.rate, "total_steps": self.total_steps, "decay_steps": self.decay_steps}


@contextlib.contextmanager
def precision_policy(mixed_precision: bool):
    """Keras's global dtype policy is `mixed_float16` inside the block when `mixed_precision`.

    Layers take the global policy when they are constructed, so models built inside compute in
    float16 with float32 variables; the previous policy is restored on exit, because one process
    may go on to build other stages' models. Without `mixed_precision` nothing changes.
    """
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scaled(optimizer, mixed_precision: bool):
    """`optimizer` wrapped in a `keras.optimizers.LossScaleOptimizer` when `mixed_precision`.

    float16 gradients of small losses underflow to zero; the wrapper keeps a dynamic loss scale
    that the train step applies with `optimizer.scale_loss(loss)`, and its `apply` unscales the
    gradients (skipping the update and halving the scale when they are not finite). A plain
    optimizer's `scale_loss` returns the loss unchanged, so one train step serves both.
    """
    return keras.optimizers.LossScaleOptimizer(optimizer) if mixed_precision else optimizer


def progress_verbosity() -> int:
    """`fit(verbose=...)`: Keras's progress bar in a terminal, one line per epoch in a log file.

    The bar redraws itself with carriage returns, which a redirected log would keep as hundreds
    of partial lines per epoch.
    """
    return 1 if sys.stdout.isatty() else 2
