"""Distillation losses, pluggable by name.

Each loss compares what the teacher(s) produced with what the student produced
for the same batch and returns a scalar. A loss names the layers it reads:
``None`` means the logits. Losses with learned parts (FitNets' adapter) create
them in ``build`` and expose them through ``trainable_weights``; those weights
are trained with the student but are not part of it, so the exported student
is unchanged.

Conventions (the Distiller combines them as
``alpha * CE(y, student) + (1 - alpha) * sum_k w_k * L_k``):

* ``kd`` (Hinton et al. 2015): ``L = T^2 * KL(p_T || q_T)`` with
  ``q_T = softmax(z_s / T)`` and ``p_T`` the teacher's softened distribution;
  for an ensemble, either ``softmax(mean_i z_i / T)`` (``ensemble='logits'``)
  or ``mean_i softmax(z_i / T)`` (``ensemble='probs'``). Batch mean.
* ``hint`` (FitNets, Romero et al. 2015): ``L = mean((adapter(f_s) - f_t)^2)``
  with a learned 1x1 convolution as adapter; the student map is resized
  bilinearly when its spatial size differs from the teacher's.
* ``attention`` (Zagoruyko & Komodakis 2017): ``Q = normalize(vec(mean_c
  f^2))`` per example, ``L = mean((Q_s - Q_t)^2)`` over batch and positions
  (the reference code's form; it uses a weight of 1000).
* ``dkd`` (Decoupled KD, Zhao et al. 2022): with ``b = [p_gt, 1 - p_gt]`` the
  binary target/non-target split of the softened distributions and ``p^nt``
  the distribution over the non-target classes only,
  ``L = T^2 * (alpha * KL(b_t || b_s) + beta * KL(p^nt_t || p^nt_s))``, batch
  mean (the reference code's TCKD and NCKD, without its warm-up factor).
  Needs the labels.
* ``dist`` (DIST, Huang et al. 2022): with ``y = softmax(z / T)``,
  ``L = T^2 * (beta * (1 - mean_i pearson(y_s[i, :], y_t[i, :]))
  + gamma * (1 - mean_j pearson(y_s[:, j], y_t[:, j])))``: inter-class
  relations per example plus intra-class relations per class over the batch.
* ``lskd`` (logit standardization, Sun et al. 2024): ``kd`` on z-scored
  logits, ``z' = (z - mean(z)) / (std(z) + 1e-7)`` per example with the
  unbiased std (as ``torch.std`` in the reference code), for the student and
  every teacher.

Logit losses read the teachers' logits only, so they work with precomputed
(cached) teacher logits; with an ensemble, the teachers' (standardized)
logits are combined as ``ensemble`` says.

For an ensemble teacher, feature losses are averaged over the teachers.

Labels are integer class ids or, for mixed batches (mixup / cutmix, see
``kd_keras.data.mix_batch``), soft float32 (batch, classes) rows
``lam * onehot(y_a) + (1 - lam) * onehot(y_b)``. :func:`label_crossentropy`
takes both (for soft labels it is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``);
losses that need class ids (DKD) and accuracy get :func:`hard_labels`: the
dominant class of a soft row (``y_a`` when ``lam > 0.5``).
"""

from kd_keras.keras_compat import keras, tf


def is_soft(labels, logits):
    """True when `labels` are soft (float rows of as many classes as `logits`)."""
    return (
        labels.dtype.is_floating
        and labels.shape.rank == logits.shape.rank
        and labels.shape[-1] is not None
        and labels.shape[-1] == logits.shape[-1]
        and labels.shape[-1] > 1
    )


def label_crossentropy(labels, logits):
    """Per-example cross-entropy of `logits` with integer or soft labels."""
    if is_soft(labels, logits):
        return keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def hard_labels(labels, logits):
    """Integer class ids: `labels` themselves, or the dominant class of soft ones."""
    return tf.argmax(labels, axis=-1) if is_soft(labels, logits) else labels


class LabelCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits with integer or soft labels (batch mean)."""

    def __init__(self, name="label_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return label_crossentropy(y_true, y_pred)


def label_accuracy(y_true, y_pred):
    """Top-1 accuracy against integer labels or the dominant class of soft ones."""
    return keras.metrics.sparse_categorical_accuracy(hard_labels(y_true, y_pred), y_pred)


class DistillationLoss:
    """Base class. Subclasses implement ``compute`` and may override ``build``.

    A loss that needs the labels sets ``needs_labels = True``; its ``compute``
    then receives them as ``labels`` (integer class ids, shape (batch,)).
    """

    name = "base"
    needs_labels = False
    # Constructor argument -> the KDConfig field it is built from
    # (kd_keras.distill.config.KDConfig.build_losses).
    kd_settings = {}

    def __init__(self, teacher_layer=None, student_layer=None):
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer

    def build(self, teacher_shapes, student_shape):
        """Creates learned parts, given the (H, W, C) shapes it will see.

        Args:
          teacher_shapes: list of per-teacher output shapes (without batch).
          student_shape: the student's output shape (without batch).
        """
        del teacher_shapes, student_shape

    @property
    def trainable_weights(self):
        return []

    def compute(self, teacher_outputs, student_output, ensemble="logits"):
        """Returns the scalar loss.

        Args:
          teacher_outputs: list, one tensor per teacher.
          student_output: the student's tensor.
          ensemble: 'logits' or 'probs' (used by logit losses).

        A loss with ``needs_labels`` also takes ``labels=`` (class ids).
        """
        raise NotImplementedError

    def get_config(self):
        return {"teacher_layer": self.teacher_layer, "student_layer": self.student_layer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def soft_targets(teacher_logits, temperature, ensemble="logits"):
    """The teacher's softened distribution; averages an ensemble as asked."""
    if ensemble == "logits":
        return tf.nn.softmax(tf.add_n(teacher_logits) / len(teacher_logits) / temperature)
    if ensemble == "probs":
        return tf.add_n([tf.nn.softmax(z / temperature) for z in teacher_logits]) / len(
            teacher_logits
        )
    raise ValueError(f"ensemble must be 'logits' or 'probs', got {ensemble!r}.")


class LogitsKD(DistillationLoss):
    """Hinton's KD: ``T^2 * KL(teacher_T || student_T)``."""

    name = "kd"
    kd_settings = {"temperature": "temperature"}

    def __init__(self, temperature=4.0):
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
        super().__init__()
        self.temperature = float(temperature)

    def compute(self, teacher_outputs, student_output, ensemble="logits"):
        t = self.temperature
        p = soft_targets(teacher_outputs, t, ensemble)
        log_q = tf.nn.log_softmax(student_output / t)
        log_p = tf.math.log(tf.maximum(p, 1e-12))
        kl = tf.reduce_sum(p * (log_p - log_q), axis=-1)
        return t * t * tf.reduce_mean(kl)

    def get_config(self):
        return {"temperature": self.temperature}


def _kl(p, log_q, axis=-1):
    """KL(p || q) per example from probabilities p and log-probabilities log q."""
    return tf.reduce_sum(p * (tf.math.log(tf.maximum(p, 1e-12)) - log_q), axis=axis)


class DecoupledKD(DistillationLoss):
    """DKD: target-class and non-target-class KD weighted separately."""

    name = "dkd"
    kd_settings = {"temperature": "temperature", "alpha": "dkd_alpha", "beta": "dkd_beta"}
    needs_labels = True

    def __init__(self, temperature=4.0, alpha=1.0, beta=8.0):
        for key, value in (("temperature", temperature), ("alpha", alpha), ("beta", beta)):
            if (
                not isinstance(value, (int, float))
                or value < 0
                or (key == "temperature" and value == 0)
            ):
                bound = "> 0" if key == "temperature" else ">= 0"
                raise ValueError(f"dkd {key} must be a number {bound}, got {value!r}.")
        super().__init__()
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)

    def compute(self, teacher_outputs, student_output, ensemble="logits", labels=None):
        if labels is None:
            raise ValueError("dkd needs the labels.")
        t = self.temperature
        classes = tf.shape(student_output)[-1]
        gt = tf.one_hot(
            tf.cast(tf.reshape(labels, [-1]), tf.int32), classes, dtype=student_output.dtype
        )
        p_t = soft_targets(teacher_outputs, t, ensemble)
        p_s = tf.nn.softmax(student_output / t)
        # Target vs non-target: binary distributions.
        pt_gt = tf.reduce_sum(p_t * gt, -1, keepdims=True)
        ps_gt = tf.reduce_sum(p_s * gt, -1, keepdims=True)
        b_t = tf.concat([pt_gt, 1.0 - pt_gt], -1)
        b_s = tf.concat([ps_gt, 1.0 - ps_gt], -1)
        tckd = _kl(b_t, tf.math.log(tf.maximum(b_s, 1e-12)))
        # Among the non-target classes only (the reference masks the target
        # logit with -1000 before the softmax; renormalizing is the same).
        nt_t = p_t * (1.0 - gt)
        nt_t = nt_t / tf.maximum(tf.reduce_sum(nt_t, -1, keepdims=True), 1e-12)
        log_nt_s = tf.nn.log_softmax(student_output / t - 1000.0 * gt)
        nckd = _kl(nt_t * (1.0 - gt), log_nt_s * (1.0 - gt))
        return t * t * tf.reduce_mean(self.alpha * tckd + self.beta * nckd)

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha, "beta": self.beta}


def _pearson(a, b, axis):
    a = a - tf.reduce_mean(a, axis, keepdims=True)
    b = b - tf.reduce_mean(b, axis, keepdims=True)
    num = tf.reduce_sum(a * b, axis)
    return num / (tf.norm(a, axis=axis) * tf.norm(b, axis=axis) + 1e-8)


class DIST(DistillationLoss):
    """DIST: Pearson relations between softened predictions, inter and intra class."""

    name = "dist"
    kd_settings = {"temperature": "temperature", "beta": "dist_beta", "gamma": "dist_gamma"}

    def __init__(self, temperature=4.0, beta=1.0, gamma=1.0):
        for key, value in (("temperature", temperature), ("beta", beta), ("gamma", gamma)):
            if (
                not isinstance(value, (int, float))
                or value < 0
                or (key == "temperature" and value == 0)
            ):
                bound = "> 0" if key == "temperature" else ">= 0"
                raise ValueError(f"dist {key} must be a number {bound}, got {value!r}.")
        super().__init__()
        self.temperature, self.beta, self.gamma = float(temperature), float(beta), float(gamma)

    def compute(self, teacher_outputs, student_output, ensemble="logits", labels=None):
        del labels
        t = self.temperature
        y_t = soft_targets(teacher_outputs, t, ensemble)
        y_s = tf.nn.softmax(student_output / t)
        inter = 1.0 - tf.reduce_mean(_pearson(y_s, y_t, axis=1))
        intra = 1.0 - tf.reduce_mean(_pearson(y_s, y_t, axis=0))
        return t * t * (self.beta * inter + self.gamma * intra)

    def get_config(self):
        return {"temperature": self.temperature, "beta": self.beta, "gamma": self.gamma}


def standardize(logits):
    """Per example z-score of logits, with the unbiased std, plus 1e-7."""
    mean = tf.reduce_mean(logits, -1, keepdims=True)
    n = tf.cast(tf.shape(logits)[-1], logits.dtype)
    var = tf.reduce_sum(tf.square(logits - mean), -1, keepdims=True) / (n - 1.0)
    return (logits - mean) / (tf.sqrt(var) + 1e-7)


class StandardizedKD(LogitsKD):
    """Logit-standardized KD: Hinton's KD on z-scored student and teacher logits."""

    name = "lskd"

    def compute(self, teacher_outputs, student_output, ensemble="logits", labels=None):
        del labels
        return super().compute(
            [standardize(z) for z in teacher_outputs], standardize(student_output), ensemble
        )


def _match_spatial(student, teacher):
    if student.shape[1:3] != teacher.shape[1:3]:
        student = tf.image.resize(student, tf.shape(teacher)[1:3], method="bilinear")
    return student


def _check_feature_shapes(name, shapes):
    for s in shapes:
        if len(s) != 3:
            raise ValueError(
                f"'{name}' needs feature maps of shape (H, W, C); got a layer output "
                f"of shape {s}. Name a convolutional layer."
            )


class HintLoss(DistillationLoss):
    """FitNets hint loss with a learned 1x1 convolution adapter per teacher."""

    name = "hint"
    kd_settings = {"teacher_layer": "teacher_layer", "student_layer": "student_layer"}

    def __init__(self, teacher_layer="stage3", student_layer="block3"):
        super().__init__(teacher_layer, student_layer)
        self.adapters = []

    def build(self, teacher_shapes, student_shape):
        _check_feature_shapes(self.name, list(teacher_shapes) + [student_shape])
        self.adapters = []
        for i, shape in enumerate(teacher_shapes):
            adapter = keras.layers.Conv2D(shape[-1], 1, name=f"hint_adapter_{i}")
            adapter.build((None,) + tuple(student_shape))
            self.adapters.append(adapter)

    @property
    def trainable_weights(self):
        return [w for a in self.adapters for w in a.trainable_weights]

    def compute(self, teacher_outputs, student_output, ensemble="logits"):
        del ensemble
        losses = []
        for adapter, t in zip(self.adapters, teacher_outputs):
            s = _match_spatial(adapter(student_output), t)
            losses.append(tf.reduce_mean(tf.square(s - t)))
        return tf.add_n(losses) / len(losses)


def attention_map(features):
    """Zagoruyko's spatial attention: L2-normalized mean of squared channels."""
    a = tf.reduce_mean(tf.square(features), axis=-1)
    a = tf.reshape(a, [tf.shape(a)[0], -1])
    return tf.math.l2_normalize(a, axis=-1)


class AttentionTransfer(DistillationLoss):
    """Activation-based attention transfer between two named layers."""

    name = "attention"
    kd_settings = {"teacher_layer": "teacher_layer", "student_layer": "student_layer"}

    def __init__(self, teacher_layer="stage3", student_layer="block3"):
        super().__init__(teacher_layer, student_layer)

    def build(self, teacher_shapes, student_shape):
        _check_feature_shapes(self.name, list(teacher_shapes) + [student_shape])

    def compute(self, teacher_outputs, student_output, ensemble="logits"):
        del ensemble
        losses = []
        for t in teacher_outputs:
            s = _match_spatial(student_output, t)
            losses.append(tf.reduce_mean(tf.square(attention_map(s) - attention_map(t))))
        return tf.add_n(losses) / len(losses)


REGISTRY = {
    cls.name: cls
    for cls in (LogitsKD, HintLoss, AttentionTransfer, DecoupledKD, DIST, StandardizedKD)
}
# Losses that read the logits only and take a temperature.
LOGIT_LOSSES = tuple(name for name, cls in REGISTRY.items() if "temperature" in cls.kd_settings)


def get(identifier, **kwargs):
    """Returns a DistillationLoss from a name, a config dict or an instance.

    Raises:
      ValueError: unknown name or type.
    """
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, dict):
        return REGISTRY[identifier["name"]].from_config(identifier["config"])
    if isinstance(identifier, str):
        if identifier not in REGISTRY:
            raise ValueError(
                f"Unknown distillation loss '{identifier}'; known: {sorted(REGISTRY)}."
            )
        return REGISTRY[identifier](**kwargs)
    raise ValueError(
        f"A distillation loss is a name ({sorted(REGISTRY)}), a config dict or a "
        f"DistillationLoss; got {type(identifier).__name__}."
    )


def serialize(loss):
    """A loss as a JSON-able {name, config} dict (the inverse of :func:`get`)."""
    return {"name": loss.name, "config": loss.get_config()}
