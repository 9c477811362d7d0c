"""Each distillation loss equals a hand computation on a fixed batch."""

import numpy as np
import pytest

from kd_keras import losses
from kd_keras.keras_compat import tf

RNG = np.random.default_rng(0)
T_LOGITS = [RNG.normal(size=(4, 5)).astype("float32") for _ in range(2)]
S_LOGITS = RNG.normal(size=(4, 5)).astype("float32")


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kd(p, s, t):
    q = np_softmax(s / t)
    return t * t * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_single_teacher_matches_hand_computation(temperature):
    got = losses.LogitsKD(temperature).compute([T_LOGITS[0]], S_LOGITS)
    want = np_kd(np_softmax(T_LOGITS[0] / temperature), S_LOGITS, temperature)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_kd_is_zero_when_student_equals_teacher():
    got = losses.LogitsKD(3.0).compute([S_LOGITS], S_LOGITS)
    assert abs(float(got)) < 1e-6


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_kd_ensemble_averaging(mode):
    t = 2.0
    got = losses.LogitsKD(t).compute(T_LOGITS, S_LOGITS, ensemble=mode)
    if mode == "logits":
        p = np_softmax((T_LOGITS[0] + T_LOGITS[1]) / 2 / t)
    else:
        p = (np_softmax(T_LOGITS[0] / t) + np_softmax(T_LOGITS[1] / t)) / 2
    np.testing.assert_allclose(float(got), np_kd(p, S_LOGITS, t), rtol=1e-5)
    # The two modes really differ on these logits.
    other = "probs" if mode == "logits" else "logits"
    assert abs(float(got) - float(losses.LogitsKD(t).compute(T_LOGITS, S_LOGITS, other))) > 1e-4


def test_hint_loss_matches_hand_computation():
    s = RNG.normal(size=(2, 3, 3, 4)).astype("float32")
    t = RNG.normal(size=(2, 3, 3, 6)).astype("float32")
    loss = losses.HintLoss("t", "s")
    loss.build([t.shape[1:]], s.shape[1:])
    kernel = RNG.normal(size=(1, 1, 4, 6)).astype("float32")
    bias = RNG.normal(size=(6,)).astype("float32")
    loss.adapters[0].set_weights([kernel, bias])
    want = np.mean((np.einsum("bhwc,cd->bhwd", s, kernel[0, 0]) + bias - t) ** 2)
    np.testing.assert_allclose(float(loss.compute([t], s)), want, rtol=1e-5)
    assert len(loss.trainable_weights) == 2


def test_attention_transfer_matches_hand_computation():
    s = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    t = RNG.normal(size=(2, 4, 4, 8)).astype("float32")

    def at(f):
        a = (f ** 2).mean(-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    want = np.mean((at(s) - at(t)) ** 2)
    got = losses.AttentionTransfer("t", "s").compute([t], s)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_feature_losses_resize_student_maps():
    s = tf.ones((1, 2, 2, 3))
    t = tf.ones((1, 4, 4, 3))
    assert float(losses.AttentionTransfer().compute([t], s)) < 1e-6


@pytest.mark.parametrize("bad, match", [
    (lambda: losses.LogitsKD(0), "temperature"),
    (lambda: losses.get("nope"), "Unknown distillation loss"),
    (lambda: losses.get(3), "distillation loss is a name"),
    (lambda: losses.HintLoss().build([(10,)], (4, 4, 3)), r"\(H, W, C\)"),
])
def test_bad_arguments_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_loss_config_round_trip():
    loss = losses.get(losses.serialize(losses.LogitsKD(2.5)))
    assert isinstance(loss, losses.LogitsKD) and loss.temperature == 2.5
