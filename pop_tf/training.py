"""What every training stage shares around `fit()`: checkpoints, resume, NaN stop, schedules.

- `fit_resumable` is the one training driver the stages call: it restores the newest checkpoint
  (explaining a mismatch by the settings changed since the run that wrote it), writes the
  resolved config, trains the steps left with `fit(initial_epoch=...)` under the run's
  `tf.distribute` strategy, stops on a NaN/Inf loss and checkpoints the last step.

- `restore_newest` restores the newest readable checkpoint of a `tf.train.CheckpointManager`
  (a corrupt newest one falls back to the one before), so a killed run continues its step count;
  when none fits the model it stops instead of training over them, naming the changed settings.
  It looks at the `ckpt-N.index` files present as well as at the manager's state file, so a
  garbage state file, or one naming only checkpoints that are gone, never starts a run over the
  checkpoints still there. `repair_checkpoint_state` (and `checkpoint_manager`, which calls it)
  rewrites a state file the manager cannot read from those files, before the manager reads it.
- `TrainingCallbacks` stops at the first non-finite loss *before* anything saves the bad
  weights, saves a checkpoint every N steps, and ends a resumed run exactly at the planned step;
  its final save replaces an unreadable newest checkpoint of the same step. A full disk while
  saving is one sentence naming the checkpoint folder.
- `BestEpoch` keeps the weights of the epoch with the best held-out score and restores them when
  training ends (a small dataset is overfitted long before the planned step).
- `ConstantThenLinearDecay` is DMIT's schedule (constant, then linear decay to 0).
"""

import dataclasses
import json
import logging
import math
import os
import re
import sys
import time

import keras
import tensorflow as tf

from pop_tf import config as config_lib
from pop_tf import errors
from pop_tf.errors import PopTfError

log = logging.getLogger(__name__)

STATE = "checkpoint"  # the CheckpointManager's state file (a text proto)
_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d+)\.index$")  # the manager's default checkpoint_name
# Checkpoints `restore_newest` found unreadable in this process: a final save of the same step
# replaces them instead of taking them as already written.
_UNREADABLE = set()


class TrainingDivergedError(PopTfError):
    """A loss became NaN or infinite; the message names the step, the loss and the checkpoint."""


class CheckpointMismatchError(PopTfError):
    """The output folder holds checkpoints, but none can be restored into this run's model."""


def as_number(value, kind=int):
    """A variable's (or tensor's) value as a Python number. `int(variable)` fails for the
    `MirroredVariable` a multi-worker strategy puts under a Keras variable."""
    return kind(keras.ops.convert_to_numpy(value))


def _step_of(path: str) -> int:
    try:
        return int(path.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoints_on_disk(directory: str) -> list:
    """The `ckpt-N` checkpoints whose index file is in `directory`, oldest (lowest N) first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = [os.path.join(directory, name[:-len(".index")]) for name in names if _CHECKPOINT_FILE.match(name)]
    return sorted(found, key=_step_of)


def _state_readable(directory: str) -> bool:
    quiet = tf.get_logger()  # TensorFlow logs "Checkpoint ignored" for a state it cannot parse
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return tf.train.get_checkpoint_state(directory) is not None
    except (UnicodeDecodeError, ValueError, tf.errors.OpError):
        return False
    finally:
        quiet.setLevel(level)


def repair_checkpoint_state(directory: str, stage: str) -> bool:
    """Rewrites a checkpoint state file (`<directory>/checkpoint`) that TensorFlow cannot read
    (garbage, cut short, not UTF-8) from the `ckpt-N` checkpoints present, or removes it when
    there are none; returns whether it did. A CheckpointManager would otherwise fail on it with a
    traceback, or take the folder as empty and overwrite the checkpoints in it."""
    path = os.path.join(directory, STATE)
    if not os.path.isfile(path) or _state_readable(directory):
        return False
    present = checkpoints_on_disk(directory)
    log.warning("%s: the checkpoint state file %s is unreadable; rebuilt from the %d checkpoints present",
                stage, path, len(present))
    if not present:
        os.remove(path)
        return True
    stamps = [os.path.getmtime(p + ".index") for p in present]
    lines = [f'model_checkpoint_path: "{os.path.basename(present[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in present]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in stamps]
    # Earlier than every checkpoint, so the manager counts them all towards max_to_keep.
    lines.append(f"last_preserved_timestamp: {min(min(stamps), time.time()) - 1.0!r}")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return True


def checkpoint_manager(checkpoint: tf.train.Checkpoint, directory: str, stage: str,
                       max_to_keep: int = 3) -> tf.train.CheckpointManager:
    """A CheckpointManager over `directory`, after `repair_checkpoint_state`."""
    repair_checkpoint_state(directory, stage)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_newest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager, stage: str,
                   changed_settings=()) -> str:
    """Restores the newest readable checkpoint; returns its path ('' for a fresh start).

    Args:
        checkpoint: what to restore into.
        manager: the run's CheckpointManager (its `checkpoints`, oldest first).
        stage: the stage name messages start with.
        changed_settings: "key: old -> new" lines, the settings this run changed against the run
            that wrote the checkpoints; named in the error when none of them can be restored.

    The candidates are the checkpoints the manager's state file lists and every `ckpt-N` in its
    folder, newest step first: a state file that is garbage (TensorFlow then lists none) or names
    only checkpoints that are gone must not start the run from step 0 over the ones still there.

    Raises:
        CheckpointMismatchError: checkpoints exist and none restores. Starting fresh would let
            the manager's rotation delete them, or overwrite them step by step, so the run stops
            and says how to go on.
    """
    listed = [p for p in manager.checkpoints if tf.io.gfile.exists(p + ".index")]
    gone = [p for p in manager.checkpoints if p not in listed]
    if gone:
        log.warning("%s: the checkpoint state file in %s names %d checkpoints that are gone (%s)", stage,
                    manager.directory, len(gone), ", ".join(os.path.basename(p) for p in gone))
    candidates = {os.path.abspath(p): p for p in checkpoints_on_disk(manager.directory)}
    candidates.update({os.path.abspath(p): p for p in listed})
    candidates = sorted(candidates.values(), key=_step_of)
    last_error = None
    for path in reversed(candidates):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
            if path not in listed:
                log.warning("%s: resumed from %s, which the checkpoint state file does not list", stage, path)
            return path
        # A checkpoint cut short by a crash fails in several ways: a TF op error, a mismatch, or
        # an IndexError from the reader when the data file ends early.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
            last_error = e
            _UNREADABLE.add(os.path.abspath(path))
            log.warning(f"{stage}: checkpoint {path} is unreadable ({type(e).__name__}); trying the previous one")
    if last_error is None:
        return ""
    folder = manager.directory
    cause = (f"this run changed {'; '.join(changed_settings)}" if changed_settings else
             f"the last error was {type(last_error).__name__}: {str(last_error).splitlines()[0][:200]}")
    raise CheckpointMismatchError(
        f"{stage}: none of the {len(candidates)} checkpoints in {folder} fits the model this run "
        f"builds ({cause}). Rerun with the settings that wrote them to resume, or start the stage over: "
        f"delete {folder} (or rerun the pipeline with --from {stage})")


class TrainingCallbacks(keras.callbacks.Callback):
    """NaN stop, checkpoints every `every` steps and at the end, and a hard stop at `total_steps`.

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
        self.saved = set()  # the steps this run has checkpointed

    def _save(self, step: int) -> None:
        with errors.storage_errors(self.manager.directory):
            self.manager.save(checkpoint_number=step)
        self.saved.add(step)
        _UNREADABLE.discard(os.path.abspath(self.manager.latest_checkpoint or ""))

    def _intact(self, path) -> bool:
        """Whether `path` is a checkpoint on disk that no restore found unreadable."""
        return bool(path) and tf.io.gfile.exists(path + ".index") and os.path.abspath(path) not in _UNREADABLE

    def on_train_batch_end(self, batch, logs=None):
        step = as_number(self.step())
        for name, value in (logs or {}).items():
            if (self.losses is None or name in self.losses) and not math.isfinite(float(value)):
                self.diverged = (step, name)
                self.model.stop_training = True
                return
        if step % self.every == 0:
            self._save(step)
        if step >= self.total_steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        # Here rather than only after fit(): a callback later in the list (BestEpoch) may load
        # other weights at train end, and the checkpoint a rerun resumes from must be the last
        # step's.
        if self.diverged is None:
            self.save_final()

    def raise_if_diverged(self, stage: str, hint: str) -> None:
        if self.diverged is None:
            return
        step, name = self.diverged
        latest = self.manager.latest_checkpoint
        last = latest if self._intact(latest) else "none (no checkpoint was written before)"
        raise TrainingDivergedError(
            f"{stage}: the loss '{name}' became NaN or infinite at step {step}; training stopped. "
            f"Last good checkpoint: {last}. {hint} and rerun (it resumes from that checkpoint).")

    def save_final(self) -> None:
        """Checkpoints the current step unless this run did, or an intact checkpoint of it is the
        newest (a rerun with nothing left to train). One a restore found unreadable, or one the
        state file names but that is gone, is replaced."""
        step = as_number(self.step())
        if step in self.saved:
            return
        latest = self.manager.latest_checkpoint
        if latest and latest.endswith(f"-{step}") and self._intact(latest):
            return
        self._save(step)


class BestEpoch(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best held-out score; restores them when training ends.

    After each epoch whose logs hold `monitor`, an epoch better than every earlier one (`mode`
    "max" or "min"; an equal value counts as better when `tie_breaker`, a log lower-is-better
    such as `val_loss`, is lower) writes `checkpoint` to `<directory>/epoch-<n>-step-<s>` and its record to
    `<directory>/best.json`. `on_train_end` (and `restore()`, for a run that had nothing left to
    train) reads the best weights back, so what the stage ships is the selected epoch, not the
    last. The record lives on disk, beside the run's checkpoints, because a killed run that
    resumes must still compare its epochs with those it trained before the kill.

    Args:
        checkpoint: a `tf.train.Checkpoint` of the weights to keep (the model, not its
            optimizers: only these are shipped).
        directory: where the best weights and `best.json` go.
        step: a callable returning the global step, recorded with the epoch.
        monitor: the log to select by (e.g. `val_pairwise_accuracy`).
        mode: "max" or "min".
        tie_breaker: a lower-is-better log that decides between equal `monitor` values, or None.
    """

    STATE = "best.json"

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, step, monitor: str, mode: str = "max",
                 tie_breaker=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.checkpoint, self.directory, self.step = checkpoint, directory, step
        self.monitor, self.mode, self.tie_breaker = monitor, mode, tie_breaker
        self.best = self._read_state()

    def _state_path(self) -> str:
        return os.path.join(self.directory, self.STATE)

    def _read_state(self):
        try:
            with open(self._state_path()) as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        if (state.get("monitor") != self.monitor or "name" not in state
                or not tf.io.gfile.exists(self._path(state) + ".index")):
            log.warning("%s names weights that are gone or another selection rule; selection starts over",
                        self._state_path())
            return None
        return state

    def _path(self, state: dict) -> str:
        # The record names its weights relative to the folder, which may be reached by another path next time.
        return os.path.join(self.directory, state["name"])

    def reset(self) -> None:
        """Forgets the epochs of an earlier run (a run that starts from scratch)."""
        if tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)
        self.best = None

    def _better(self, value: float, tie) -> bool:
        if self.best is None:
            return True
        best = self.best["value"]
        if value != best:
            return value > best if self.mode == "max" else value < best
        return tie is not None and self.best.get("tie") is not None and tie < self.best["tie"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            return
        value = float(logs[self.monitor])
        tie = float(logs[self.tie_breaker]) if self.tie_breaker in logs else None
        history = (self.best or {}).get("history", [])
        history = [h for h in history if h["epoch"] < epoch + 1] + [{"epoch": epoch + 1, "value": value, "tie": tie}]
        if self._better(value, tie):
            previous = self._path(self.best) if self.best else None
            step = as_number(self.step())
            # The step in the name too: an epoch trained again after a resume never overwrites
            # the weights the record still names.
            name = f"epoch-{epoch + 1}-step-{step}"
            tf.io.gfile.makedirs(self.directory)
            self.checkpoint.write(os.path.join(self.directory, name))
            self.best = {"monitor": self.monitor, "tie_breaker": self.tie_breaker, "epoch": epoch + 1,
                         "step": step, "value": value, "tie": tie, "name": name}
        else:
            previous = None
        self.best["history"] = history
        # The record names new weights only once they are complete, and the old ones go only after
        # it no longer names them, so a kill at any point leaves a record and weights that match.
        with open(self._state_path() + ".tmp", "w") as f:
            json.dump(self.best, f, indent=2)
        os.replace(self._state_path() + ".tmp", self._state_path())
        if previous and previous != self._path(self.best):
            for old in tf.io.gfile.glob(previous + ".*"):
                tf.io.gfile.remove(old)

    def on_train_end(self, logs=None):
        self.restore()

    def restore(self):
        """Reads the best epoch's weights back; returns its record (None when no epoch was held out)."""
        if self.best is None:
            return None
        self.checkpoint.read(self._path(self.best)).assert_consumed()
        return self.best


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


def progress_verbosity() -> int:
    """`fit(verbose=...)`: Keras's progress bar in a terminal, one line per epoch in a log file.

    The bar redraws itself with carriage returns, which a redirected log would keep as hundreds
    of partial lines per epoch.
    """
    return 1 if sys.stdout.isatty() else 2


class ImageSummary(keras.callbacks.Callback):
    """Writes `make_image()` (uint8 [H, W, 3]) under `title` to `writer` after every epoch, at
    the global step `step()`."""

    def __init__(self, writer, title: str, make_image, step):
        super().__init__()
        self.writer, self.title, self.make_image, self.step = writer, title, make_image, step

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=as_number(self.step())):
            tf.summary.image(self.title, self.make_image()[None])


@dataclasses.dataclass
class Fitted:
    """What `fit_resumable` did: the checkpoint it resumed (`restored`, '' for a fresh start),
    the steps before and after, the last logged value of each metric (`history`, empty when
    nothing was left to train), the `BestEpoch` record it loaded (or None) and the checkpoint folder."""

    restored: str
    start_step: int
    step: int
    history: dict
    best: object
    checkpoints: str


def fit_resumable(trainer, dataset, cfg, callbacks=(), *, stage: str, output: str, checkpoint: dict, step,
                  epochs: int, steps_per_epoch: int, hint: str, strategy=None, resume_from: str = "",
                  validation_data=None, validation_steps=None) -> Fitted:
    """Trains (or resumes) a compiled trainer to `epochs × steps_per_epoch` steps; every
    training stage runs through here.

    In order: reads the settings this run changed against `<resume_from>/config.json`; restores
    the newest readable checkpoint of `<resume_from>/checkpoints` (`restore_newest`, under the
    strategy's scope); writes `cfg` to `<output>/config.json`; forgets the epochs a `BestEpoch`
    kept when the run starts from scratch; trains the steps left with `fit(initial_epoch=...)`
    and `TrainingCallbacks` first among the callbacks; raises `TrainingDivergedError` (with
    `hint`) on a NaN/Inf loss; checkpoints the last step into `<output>/checkpoints`; and loads
    the `BestEpoch` weights (a rerun with nothing left to train has not loaded them).

    Args:
        trainer: a compiled Keras model whose variables (and its optimizers') were built under
            `strategy.scope()`.
        dataset: a callable `start_step -> tf.data.Dataset` of global batches (a resumed run
            draws from a seed moved on by the step), or the dataset itself; `fit()` distributes it.
        cfg: the resolved config section (with `checkpoint_every`), written to config.json.
        callbacks: Keras callbacks after the checkpointing one (a `BestEpoch` among them is
            reset on a fresh start and read back at the end).
        stage: the stage name messages start with.
        output: the folder this process writes (checkpoints/, config.json): the stage's output
            folder, or a non-chief worker's temporary one (`pop_tf.distribution.worker_output`).
        checkpoint: the trackables to checkpoint, by name (the model and its optimizers).
        step: a callable returning the global step.
        epochs, steps_per_epoch: the planned run; the step count decides where a rerun resumes.
        hint: what to change after a NaN/Inf loss ("Lower <stage>.learning_rate").
        strategy: the run's `tf.distribute.Strategy` (default: the default strategy).
        resume_from: the folder whose checkpoints and config.json a run resumes from (default
            `output`; the chief's output folder on every worker).
        validation_data, validation_steps: as for `fit()`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resume_from = resume_from or output
    os.makedirs(output, exist_ok=True)
    # Read before this run's config replaces it: a checkpoint that no longer fits is explained by it.
    changed = config_lib.changed_settings(cfg, resume_from)
    total_steps = epochs * steps_per_epoch
    state = tf.train.Checkpoint(**checkpoint)
    directory = os.path.join(output, "checkpoints")
    source = os.path.join(resume_from, "checkpoints")
    with strategy.scope():
        manager = checkpoint_manager(state, directory, stage)
        # A non-chief worker reads the chief's checkpoints but leaves their state file alone.
        reader = manager if os.path.abspath(source) == os.path.abspath(directory) else \
            tf.train.CheckpointManager(state, source, max_to_keep=3)
        restored = restore_newest(state, reader, stage, changed)
    config_lib.write_resolved(cfg, output)
    start_step = as_number(step())
    if restored:
        log.info(f"{stage}: resuming from {restored} at step {start_step} of {total_steps}")
    selections = [c for c in callbacks if isinstance(c, BestEpoch)]
    if not restored:
        for selection in selections:
            selection.reset()
    control = TrainingCallbacks(manager, step, cfg.checkpoint_every, total_steps)
    history = {}
    if start_step < total_steps:
        fitted = trainer.fit(dataset(start_step) if callable(dataset) else dataset, epochs=epochs,
                             initial_epoch=start_step // steps_per_epoch, shuffle=False,
                             steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                             validation_steps=validation_steps, callbacks=[control, *callbacks],
                             verbose=progress_verbosity())
        history = {name: float(values[-1]) for name, values in fitted.history.items() if values}
    control.raise_if_diverged(stage, hint)
    control.save_final()
    # fit() loads the best epoch when it ends; a rerun with nothing left to train loads it here.
    best = selections[0].restore() if selections else None
    return Fitted(restored=restored, start_step=start_step, step=as_number(step()), history=history, best=best,
                  checkpoints=manager.directory)
