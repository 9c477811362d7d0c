"""Each distillation loss equals a hand computation on a fixed batch."""

import numpy as np
import pytest

from kd_keras.distill import losses
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
        a = (f**2).mean(-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    want = np.mean((at(s) - at(t)) ** 2)
    got = losses.AttentionTransfer("t", "s").compute([t], s)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_feature_losses_resize_student_maps():
    s = tf.ones((1, 2, 2, 3))
    t = tf.ones((1, 4, 4, 3))
    assert float(losses.AttentionTransfer().compute([t], s)) < 1e-6


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: losses.LogitsKD(0), "temperature"),
        (lambda: losses.get("nope"), "Unknown distillation loss"),
        (lambda: losses.get(3), "distillation loss is a name"),
        (lambda: losses.HintLoss().build([(10,)], (4, 4, 3)), r"\(H, W, C\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_loss_config_round_trip():
    loss = losses.get(losses.serialize(losses.LogitsKD(2.5)))
    assert isinstance(loss, losses.LogitsKD) and loss.temperature == 2.5


LABELS = np.array([0, 3, 4, 1])


def np_kl(p, q):
    return np.sum(p * (np.log(np.maximum(p, 1e-12)) - np.log(q)), -1)


def np_dkd(t_logits, s_logits, labels, t, alpha, beta):
    """Zhao et al.'s DKD as their reference code computes it (no warm-up)."""
    gt = np.eye(t_logits.shape[1])[labels]
    p_t, p_s = np_softmax(t_logits / t), np_softmax(s_logits / t)
    b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
    b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1)
    tckd = np_kl(b_t, b_s).mean() * t * t
    nt_t = np_softmax(t_logits / t - 1000.0 * gt)
    nt_s = np_softmax(s_logits / t - 1000.0 * gt)
    nckd = np_kl(nt_t, np.maximum(nt_s, 1e-30)).mean() * t * t
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("t, alpha, beta", [(4.0, 1.0, 8.0), (1.0, 0.5, 2.0)])
def test_dkd_matches_hand_computation(t, alpha, beta):
    got = losses.DecoupledKD(t, alpha, beta).compute([T_LOGITS[0]], S_LOGITS, labels=LABELS)
    want = np_dkd(T_LOGITS[0], S_LOGITS, LABELS, t, alpha, beta)
    np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_dkd_with_beta_1_and_alpha_1_is_not_kd_but_decomposes_it():
    # KD = TCKD + (1 - p_t,gt) * NCKD (the paper's identity), per example.
    t = 2.0
    kd = losses.LogitsKD(t).compute([T_LOGITS[0][:1]], S_LOGITS[:1])
    p_gt = np_softmax(T_LOGITS[0][:1] / t)[0, LABELS[0]]
    tckd = losses.DecoupledKD(t, 1.0, 0.0).compute(
        [T_LOGITS[0][:1]], S_LOGITS[:1], labels=LABELS[:1]
    )
    nckd = losses.DecoupledKD(t, 0.0, 1.0).compute(
        [T_LOGITS[0][:1]], S_LOGITS[:1], labels=LABELS[:1]
    )
    np.testing.assert_allclose(float(kd), float(tckd) + (1 - p_gt) * float(nckd), rtol=1e-4)


def np_pearson(a, b):
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-8)


@pytest.mark.parametrize("t, beta, gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5)])
def test_dist_matches_hand_computation(t, beta, gamma):
    got = losses.DIST(t, beta, gamma).compute([T_LOGITS[0]], S_LOGITS)
    y_t, y_s = np_softmax(T_LOGITS[0] / t), np_softmax(S_LOGITS / t)
    inter = 1 - np_pearson(y_s, y_t).mean()
    intra = 1 - np_pearson(y_s.T, y_t.T).mean()
    np.testing.assert_allclose(float(got), t * t * (beta * inter + gamma * intra), rtol=1e-4)


def np_standardize(z):
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_lskd_matches_hand_computation(t):
    got = losses.StandardizedKD(t).compute([T_LOGITS[0]], S_LOGITS)
    want = np_kd(np_softmax(np_standardize(T_LOGITS[0]) / t), np_standardize(S_LOGITS), t)
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
    # Invariant to a per-example shift and scale of the logits; KD is not.
    moved = 3.0 * S_LOGITS + 5.0
    np.testing.assert_allclose(
        float(losses.StandardizedKD(t).compute([T_LOGITS[0]], moved)), want, rtol=1e-4
    )


@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize("name", ["dkd", "dist", "lskd"])
def test_new_logit_losses_average_an_ensemble_as_asked(name, mode):
    loss = losses.get(name)
    kw = {"labels": LABELS} if loss.needs_labels else {}
    two = float(loss.compute(T_LOGITS, S_LOGITS, ensemble=mode, **kw))
    if mode == "logits" and name != "lskd":  # The ensemble is its mean logits.
        mean = (T_LOGITS[0] + T_LOGITS[1]) / 2
        np.testing.assert_allclose(two, float(loss.compute([mean], S_LOGITS, **kw)), rtol=1e-5)
    one = float(loss.compute(T_LOGITS[:1], S_LOGITS, **kw))
    assert abs(two - one) > 1e-4  # The second teacher counts.


def test_new_loss_config_round_trip():
    for loss in (
        losses.DecoupledKD(2.0, 0.5, 4.0),
        losses.DIST(3.0, 2.0, 0.5),
        losses.StandardizedKD(2.0),
    ):
        again = losses.get(losses.serialize(loss))
        assert type(again) is type(loss) and again.get_config() == loss.get_config()
