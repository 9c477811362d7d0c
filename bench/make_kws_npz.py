"""A keyword-spotting-like ``.npz`` from synthesized speech: MFCC frames of ten words.

    PYTHONPATH=. python bench/make_kws_npz.py --out=/tmp/kws.npz

Each example is one word of the ten Speech Commands keywords (yes, no, up,
down, left, right, on, off, stop, go) spoken by ``espeak-ng`` (``apt-get
install espeak-ng``) with a random voice, speed, pitch and word gap, shifted
(and with one of five voice variants, male and female timbres), shifted
by up to 100 ms in a one-second window, mixed with white noise at a random
signal-to-noise ratio, then turned into the MLPerf Tiny keyword-spotting
input: 49 frames of 10 MFCCs (30 ms windows every 20 ms at 16 kHz, 40 mel
bins, computed with ``tf.signal``), standardized with the training split's
mean and deviation per coefficient. Writes ``x_train`` (N, 49, 10, 1)
float32, ``y_train``, ``x_test``, ``y_test`` and ``class_names``: the layout
``--dataset=npz:PATH`` reads. The voices of the test split are never heard
in training (``--test_voices``), so the test split asks for a new speaker.
The same bytes for the same flags and espeak-ng version. 16 s for the
default 2,400 clips on a 2-core CPU (one ``espeak-ng`` process per clip);
docs/kws_npz.md trains on it.
"""

import io
import os
import shutil
import subprocess
import sys
import wave

import numpy as np
from absl import app, flags

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOICES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
# espeak-ng voice variants (male and female timbres), drawn per clip.
VARIANTS = ("", "+m3", "+m5", "+f2", "+f4")
RATE = 16000

_OUT = flags.DEFINE_string("out", None, "Where to write the .npz.")
_PER_WORD = flags.DEFINE_integer("per_word", 240, "Clips per word.", lower_bound=10)
_TEST_VOICES = flags.DEFINE_list(
    "test_voices", ["en-us-nyc", "en-029"], "Voices heard only in the test split."
)
_SNR = flags.DEFINE_list("snr_db", ["5", "30"], "Range of the signal-to-noise ratio, dB.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
flags.mark_flag_as_required("out")


def speak(word, voice, speed, pitch, gap):
    """The word spoken by espeak-ng, as float32 samples at 16 kHz."""
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap)]
        + ["--stdout", word],
        capture_output=True,
        check=True,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32)
    samples /= 32768.0
    n = int(round(len(samples) * RATE / rate))  # Linear resampling to 16 kHz.
    return np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples)


def clip(samples, shift, rng, snr_db):
    """One second: the word centred, moved by `shift` samples, with white noise."""
    out = np.zeros(RATE, np.float32)
    samples = samples[:RATE]
    start = int(np.clip((RATE - len(samples)) // 2 + shift, 0, RATE - len(samples)))
    out[start : start + len(samples)] = samples
    power = float(np.mean(samples**2)) + 1e-12
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), RATE)
    return (out + noise).astype(np.float32)


def mfcc(clips):
    """(N, 49, 10) MFCCs of one-second 16 kHz clips: 30 ms frames every 20 ms."""
    from kd_keras.keras_compat import tf

    stft = tf.signal.stft(clips, frame_length=480, frame_step=320, fft_length=512)
    power = tf.abs(stft) ** 2
    mel = tf.signal.linear_to_mel_weight_matrix(40, power.shape[-1], RATE, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(power, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()


def main(argv):
    del argv
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install espeak-ng")
    unknown = sorted(set(_TEST_VOICES.value) - set(VOICES))
    if unknown:
        sys.exit(
            f"--test_voices={','.join(_TEST_VOICES.value)}: unknown {unknown}; allowed {VOICES}"
        )
    rng = np.random.default_rng(_SEED.value)
    low, high = (float(v) for v in _SNR.value)
    clips, labels, test = [], [], []
    for label, word in enumerate(WORDS):
        for _ in range(_PER_WORD.value):
            voice = VOICES[rng.integers(len(VOICES))]
            variant = VARIANTS[rng.integers(len(VARIANTS))]
            speed, pitch = int(rng.integers(110, 220)), int(rng.integers(20, 80))
            samples = speak(word, voice + variant, speed, pitch, 0)
            clips.append(clip(samples, int(rng.integers(-1600, 1601)), rng, rng.uniform(low, high)))
            labels.append(label)
            test.append(voice in _TEST_VOICES.value)
    features = mfcc(np.stack(clips))[..., None].astype(np.float32)
    labels, test = np.asarray(labels, np.int64), np.asarray(test)
    mean = features[~test].mean(axis=(0, 1, 3), keepdims=True)
    std = features[~test].std(axis=(0, 1, 3), keepdims=True) + 1e-6
    features = ((features - mean) / std).astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    tmp = _OUT.value + ".tmp.npz"
    np.savez(
        tmp,
        x_train=features[~test],
        y_train=labels[~test],
        x_test=features[test],
        y_test=labels[test],
        class_names=np.asarray(WORDS),
    )
    os.replace(tmp, _OUT.value)
    print(
        f"{len(labels)} clips ({(~test).sum()} train, {test.sum()} test from voices "
        f"{','.join(_TEST_VOICES.value)}), 10 words, MFCC 49x10 in {_OUT.value}"
    )


if __name__ == "__main__":
    app.run(main)
