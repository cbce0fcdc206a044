"""What the trainers keep out of Keras's tracking, and the variables their tapes watch."""


class Untracked:
    """Holds an object out of Keras's attribute tracking.

    The frozen feature extractor must not become part of the trainer: tracked, its weights
    would appear in `trainer.trainable_variables`, in its checkpoints and in its saved files.
    """

    def __init__(self, value):
        self.value = value


def tf_variables(variables):
    """The `tf.Variable`s behind Keras variables (what `GradientTape.watch` accepts)."""
    return [getattr(v, "value", v) for v in variables]
