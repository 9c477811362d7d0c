"""The Distiller: a Keras model that trains a student from frozen teacher(s).

    distiller = Distiller(student, teacher, distillation_losses="kd",
                          alpha=0.1, temperature=4.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    distiller.student.save("student.keras")   # a plain Keras model

Loss per batch (see ``kd_keras.distill.losses`` for each ``L_k``)::

    loss = alpha * CE(y, student(x)) + (1 - alpha) * sum_k w_k * L_k
           + the student's own regularization losses

``y`` may be integer labels or the soft labels of a mixed (mixup / cutmix)
batch: CE is then ``lam * CE(y_a) + (1 - lam) * CE(y_b)``, and losses that
need class ids (DKD) and the accuracy metric get the dominant class. The
teacher sees exactly the (augmented, mixed) batch ``x`` the student sees.

The teacher runs with ``training=False`` outside the gradient tape and is never
updated; gradients flow to the student and to the losses' learned parts
(FitNets adapters) only. ``test_step`` evaluates the student alone, so
``evaluate`` and validation report the student's loss and metrics.
"""

from kd_keras.distill import losses as losses_lib
from kd_keras.keras_compat import keras, tf

ENSEMBLE_MODES = ("logits", "probs")


def find_layer(model, name):
    """Finds `name` in `model`, also under a TF-MOT wrapper's prefixed name.

    Raises:
      ValueError: no such layer, listing the model's layer names, or saying
        that the model wraps an opaque foreign model (``kd_keras.distill.teachers``).
    """
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:  # prune_low_magnitude_X, quant_X, cluster_X
        if layer.name.endswith("_" + name) and hasattr(layer, "layer"):
            return layer
    opaque = [l for l in model.layers if getattr(l, "opaque", False)]
    if opaque:  # kd_keras.distill.teachers.ForeignModel: a Keras 3 model or a SavedModel.
        raise ValueError(
            f"Model '{model.name}' runs a model loaded from {opaque[0].source} as one opaque "
            f"layer, so its layer '{name}' cannot be read: feature losses (hint, attention) "
            "need a tf_keras teacher; logit losses (kd, dkd, dist) work with any teacher."
        )
    raise ValueError(
        f"Model '{model.name}' has no layer named '{name}'; its layers are "
        f"{[l.name for l in model.layers]}."
    )


def _single_io(model, role):
    if not isinstance(model, keras.Model):
        raise ValueError(f"The {role} must be a keras.Model, got {type(model).__name__}.")
    if len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise ValueError(
            f"The {role} '{model.name}' must be a built functional model with one "
            "input and one output (logits)."
        )


def check_compatible(teachers, student):
    """Raises ValueError when a teacher and the student disagree on I/O shapes."""
    _single_io(student, "student")
    s_in = tuple(student.input_shape[1:])
    s_out = tuple(student.output_shape[1:])
    for i, teacher in enumerate(teachers):
        _single_io(teacher, f"teacher #{i}")
        t_in = tuple(teacher.input_shape[1:])
        t_out = tuple(teacher.output_shape[1:])
        if t_in != s_in:
            raise ValueError(
                f"Teacher '{teacher.name}' takes inputs of shape {t_in} but the "
                f"student '{student.name}' takes {s_in}; they must match."
            )
        if t_out != s_out:
            raise ValueError(
                f"Teacher '{teacher.name}' outputs shape {t_out} but the student "
                f"'{student.name}' outputs {s_out}: the number of classes must match."
            )


class Distiller(keras.Model):
    """Trains `student` to match `teacher` (a model or a list: an ensemble).

    Args:
      student: functional keras.Model producing logits; trained.
      teacher: keras.Model or list of them producing logits; frozen.
      distillation_losses: a loss name ('kd', 'hint', 'attention'), a
        ``kd_keras.distill.losses.DistillationLoss``, or a list of them.
      distillation_loss_weights: one weight per loss (default all 1).
      alpha: weight of the student's cross-entropy with the labels, in [0, 1];
        ``1 - alpha`` weighs the distillation terms.
      temperature: softmax temperature of the 'kd' loss built from a name.
      ensemble: how several teachers are combined for logit losses: 'logits'
        (average logits, then soften) or 'probs' (average softened
        probabilities).
      name: model name.

    Raises:
      ValueError: incompatible teacher/student, or an argument out of range.
    """

    def __init__(
        self,
        student,
        teacher,
        distillation_losses="kd",
        distillation_loss_weights=None,
        alpha=0.1,
        temperature=4.0,
        ensemble="logits",
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("teacher must be a keras.Model or a non-empty list of them.")
        check_compatible(teachers, student)
        if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
        if ensemble not in ENSEMBLE_MODES:
            raise ValueError(f"ensemble must be one of {ENSEMBLE_MODES}, got {ensemble!r}.")
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if not distillation_losses:
            raise ValueError("distillation_losses must name at least one loss.")
        built = []
        for item in distillation_losses:
            kw = {"temperature": temperature} if item in losses_lib.LOGIT_LOSSES else {}
            built.append(losses_lib.get(item, **kw))
        if distillation_loss_weights is None:
            distillation_loss_weights = [1.0] * len(built)
        if len(distillation_loss_weights) != len(built):
            raise ValueError(
                f"{len(distillation_loss_weights)} distillation_loss_weights for "
                f"{len(built)} distillation_losses; give one weight per loss."
            )

        self.student = student
        self.teachers = teachers
        for t in teachers:
            t.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.ensemble = ensemble
        self.distillation_losses = built
        self.distillation_loss_weights = [float(w) for w in distillation_loss_weights]
        self._build_extractors()
        # Keeps the losses' learned parts (FitNets adapters) tracked for
        # checkpoints; they are not part of the student.
        self.loss_layers = [a for loss in built for a in getattr(loss, "adapters", [])]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        # Built now so that checkpoints and callbacks see the weights.
        self.build((None,) + tuple(student.input_shape[1:]))

    @property
    def teacher(self):
        """The teacher, or the list of teachers of an ensemble."""
        return self.teachers[0] if len(self.teachers) == 1 else self.teachers

    def _build_extractors(self):
        """One model per network returning [logits, feature_1, ...]."""
        layer_names = lambda attr: sorted(
            {
                getattr(l, attr)
                for l in self.distillation_losses  # noqa: E731
                if getattr(l, attr) is not None
            }
        )
        self._t_names = layer_names("teacher_layer")
        self._s_names = layer_names("student_layer")

        def extractor(model, names):
            outs = [model.output] + [find_layer(model, n).output for n in names]
            return keras.Model(model.inputs, outs, name=f"{model.name}_features")

        self._student_features = extractor(self.student, self._s_names)
        self._teacher_features = [extractor(t, self._t_names) for t in self.teachers]
        for loss in self.distillation_losses:
            ti = self._index(self._t_names, loss.teacher_layer)
            si = self._index(self._s_names, loss.student_layer)
            t_shapes = [tuple(f.outputs[ti].shape[1:]) for f in self._teacher_features]
            s_shape = tuple(self._student_features.outputs[si].shape[1:])
            loss.build(t_shapes, s_shape)

    @staticmethod
    def _index(names, layer):
        return 0 if layer is None else 1 + names.index(layer)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Compiles with the student's optimizer and metrics (on its logits)."""
        if "loss" in kwargs and kwargs.pop("loss") is not None:
            raise ValueError(
                "Distiller.compile takes no `loss`: the student loss is sparse "
                "categorical cross-entropy on logits and the distillation losses "
                "are given to the constructor."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker]
        if self.compiled_metrics is not None:
            metrics += self.compiled_metrics.metrics
        return metrics

    def _student_loss(self, y, logits, sample_weight):
        per_example = losses_lib.label_crossentropy(y, logits)
        if sample_weight is not None:
            per_example *= tf.cast(sample_weight, per_example.dtype)
        return tf.reduce_mean(per_example)

    def teacher_outputs(self, x):
        """Per teacher, [logits, features...]; no gradient, inference mode."""
        return [
            [tf.stop_gradient(o) for o in _as_list(f(x, training=False))]
            for f in self._teacher_features
        ]

    def distillation_loss(self, teacher_outs, student_outs, labels=None):
        """Weighted sum of the distillation losses for one batch (`labels` go
        to the losses that need them, e.g. DKD)."""
        total = 0.0
        for loss, w in zip(self.distillation_losses, self.distillation_loss_weights):
            ti = self._index(self._t_names, loss.teacher_layer)
            si = self._index(self._s_names, loss.student_layer)
            extra = {"labels": labels} if getattr(loss, "needs_labels", False) else {}
            total += w * loss.compute(
                [t[ti] for t in teacher_outs], student_outs[si], self.ensemble, **extra
            )
        return total

    @property
    def trainable_variables_for_update(self):
        extra = [w for loss in self.distillation_losses for w in loss.trainable_weights]
        return self.student.trainable_variables + extra

    @property
    def uses_features(self):
        """True when a loss reads intermediate layers (not only logits)."""
        return bool(self._t_names or self._s_names)

    def precompute_teacher_logits(self, images, batch_size=512):
        """The teachers' logits for `images`, shape (N, num_teachers, classes).

        For training without augmentation the teachers' outputs per example
        never change, so they can be computed once and fed with the labels:
        ``y = {"label": labels, "teacher_logits": these}``. The loss is the same
        as computing them every step; only the teacher's forward passes are
        saved. Only logit losses can use this (see ``uses_features``).
        """
        if isinstance(images, tf.data.Dataset):  # Batched already.
            outs = [t.predict(images, verbose=0) for t in self.teachers]
        else:
            outs = [t.predict(images, batch_size=batch_size, verbose=0) for t in self.teachers]
        return tf.stack(outs, axis=1).numpy()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(y, dict):  # Labels with precomputed teacher logits.
            if self.uses_features:
                raise ValueError(
                    "Precomputed teacher logits cannot feed feature losses "
                    f"({self._t_names}); pass plain labels."
                )
            cached = y["teacher_logits"]
            y = y["label"]
            teacher_outs = [[cached[:, i]] for i in range(len(self.teachers))]
        else:
            teacher_outs = self.teacher_outputs(x)
        with tf.GradientTape() as tape:
            student_outs = _as_list(self._student_features(x, training=True))
            student_loss = self._student_loss(y, student_outs[0], sample_weight)
            hard = losses_lib.hard_labels(y, student_outs[0])
            distill_loss = self.distillation_loss(teacher_outs, student_outs, hard)
            loss = self.alpha * student_loss + (1.0 - self.alpha) * distill_loss
            if self.student.losses:
                loss += tf.add_n(self.student.losses)
            # Gradients are summed over replicas under a tf.distribute strategy.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables_for_update
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.loss_tracker.update_state(loss)
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distill_loss)
        self.compiled_metrics.update_state(hard, student_outs[0], sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self.student(x, training=False)
        student_loss = self._student_loss(y, logits, sample_weight)
        self.loss_tracker.update_state(student_loss)
        self.student_loss_tracker.update_state(student_loss)
        self.compiled_metrics.update_state(y, logits, sample_weight)
        return {m.name: m.result() for m in self.metrics if m is not self.distillation_loss_tracker}

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(x, training=False)

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": [keras.saving.serialize_keras_object(t) for t in self.teachers],
            "distillation_losses": [losses_lib.serialize(l) for l in self.distillation_losses],
            "distillation_loss_weights": self.distillation_loss_weights,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "ensemble": self.ensemble,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects
        )
        config["teacher"] = [
            keras.saving.deserialize_keras_object(t, custom_objects=custom_objects)
            for t in config["teacher"]
        ]
        return cls(**config)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
