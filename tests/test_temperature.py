"""Temperature scaling and ECE (pipeline/evaluate/temperature.py, edge_runtime.quant.temperature_scale)."""
from __future__ import annotations

import numpy as np

from edge_runtime.quant import softmax, temperature_scale
from pipeline.evaluate import temperature


def _sample(n: int, true_t: float, seed: int = 0):
    """Logits z; labels drawn from softmax(z / true_t): a model whose raw scores softmax(z) are off by T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 10)).astype(np.float32)
    p_true = softmax(z / true_t)
    y = np.array([rng.choice(10, p=row / row.sum()) for row in p_true])
    return softmax(z), y


def test_temperature_one_is_the_identity_and_ranking_never_changes():
    probs, _ = _sample(500, 1.0)
    np.testing.assert_allclose(temperature_scale(probs, 1.0), probs)
    for t in (0.5, 2.0):
        scaled = temperature_scale(probs, t)
        np.testing.assert_allclose(scaled.sum(1), 1.0, rtol=1e-5)
        assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert (temperature_scale(probs, 2.0).max(1) <= probs.max(1) + 1e-6).all()   # softer


def test_fit_recovers_the_temperature_and_lowers_ece():
    for true_t in (0.6, 1.8):
        probs, y = _sample(4000, true_t)
        t = temperature.fit_temperature(probs, y)
        assert abs(np.log(t / true_t)) < 0.12, (t, true_t)
        assert temperature.ece(temperature_scale(probs, t), y) < temperature.ece(probs, y)


def test_ece_is_zero_when_confidence_equals_accuracy_and_large_when_not():
    probs = np.full((1000, 10), 0.0, np.float32)
    probs[:, 0], probs[:, 1:] = 0.8, 0.2 / 9
    y = np.where(np.arange(1000) < 800, 0, 1)            # right exactly 80 % of the time at 0.8
    assert temperature.ece(probs, y) < 1e-6
    assert abs(temperature.ece(probs, np.ones(1000, int)) - 0.8) < 1e-6   # always wrong at 0.8
