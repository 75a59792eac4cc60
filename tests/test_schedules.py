"""Schedules of SPEC §4: closed forms at chosen epochs."""

from __future__ import annotations

import math

import pytest

from lossattn.schedules import adam_betas, consistency_weight, learning_rate, ramp_down, ramp_up


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("R", [1, 10, 80])
def test_ramp_up_closed_form(R):
    assert close(ramp_up(0, R), math.exp(-5))
    assert close(ramp_up(R / 2, R), math.exp(-5 * 0.25))
    assert close(ramp_up(0.3 * R, R), math.exp(-5 * 0.7**2))
    assert ramp_up(R, R) == 1.0
    assert ramp_up(3 * R, R) == 1.0  # clipped
    values = [ramp_up(m, R) for m in range(R + 1)]
    assert values == sorted(values)


def test_ramp_up_of_length_zero_is_one():
    assert ramp_up(0, 0) == 1.0 and ramp_up(7, 0) == 1.0


@pytest.mark.parametrize("c", [7.5, 12.5])
def test_ramp_down_closed_form(c):
    E, D = 100, 30  # ramp-down over epochs 70 … 100
    assert ramp_down(0, E, D, c) == 1.0
    assert ramp_down(69.5, E, D, c) == 1.0
    assert ramp_down(70, E, D, c) == 1.0
    assert close(ramp_down(85, E, D, c), math.exp(-c * 0.25))
    assert close(ramp_down(76, E, D, c), math.exp(-c * 0.2**2))
    assert close(ramp_down(100, E, D, c), math.exp(-c))
    assert close(ramp_down(130, E, D, c), math.exp(-c))  # stays at the final value
    assert ramp_down(50, E, 0, c) == 1.0


def test_ramp_down_default_c_is_image_classification():
    assert close(ramp_down(100, 100, 50), math.exp(-12.5))


def test_learning_rate_is_max_lr_times_both_ramps():
    max_lr, E, R, D = 3e-3, 100, 60, 80  # ramps overlap on epochs 20 … 60
    assert close(learning_rate(0, max_lr, E, R, D), max_lr * math.exp(-5))
    assert close(learning_rate(15, max_lr, E, R, D), max_lr * math.exp(-5 * 0.75**2))
    # epoch 40: ramp-up T = 2/3, ramp-down T2 = 1 − 20/80
    assert close(learning_rate(40, max_lr, E, R, D), max_lr * math.exp(-5 / 9) * math.exp(-12.5 * 0.25**2))
    assert close(learning_rate(60, max_lr, E, R, D, 7.5), max_lr * math.exp(-7.5 * 0.5**2))
    assert close(learning_rate(100, max_lr, E, R, D), max_lr * math.exp(-12.5))
    assert learning_rate(10, max_lr, E) == max_lr  # no ramps


def test_adam_betas_during_and_after_ramps():
    E, R, D = 100, 30, 40  # ramp-up 0 … 30, ramp-down 60 … 100
    assert adam_betas(0, E, R, D) == (0.9, 0.99)
    assert adam_betas(29.9, E, R, D) == (0.9, 0.99)
    assert adam_betas(30, E, R, D) == (0.9, 0.999)
    assert adam_betas(60, E, R, D) == (0.9, 0.999)
    b1, b2 = adam_betas(80, E, R, D)
    r = math.exp(-12.5 * 0.25)
    assert close(b1, 0.9 * r + 0.5 * (1 - r)) and b2 == 0.999
    b1, _ = adam_betas(100, E, R, D, rampdown_c=7.5)
    r = math.exp(-7.5)
    assert close(b1, 0.9 * r + 0.5 * (1 - r))
    assert 0.5 < b1 < 0.5003
    # custom end points
    b1, b2 = adam_betas(100, E, R, D, beta1=(0.8, 0.4), beta2=(0.9, 0.95))
    assert close(b1, 0.8 * math.exp(-12.5) + 0.4 * (1 - math.exp(-12.5))) and b2 == 0.95


def test_adam_betas_without_ramps_keep_first_values():
    assert adam_betas(0, 100) == (0.9, 0.99)
    assert adam_betas(99, 100) == (0.9, 0.99)


def test_consistency_weight():
    assert close(consistency_weight(0, 3.0, 80), 3.0 * math.exp(-5))
    assert close(consistency_weight(40, 3.0, 80), 3.0 * math.exp(-5 * 0.25))
    assert consistency_weight(80, 3.0, 80) == 3.0
    assert consistency_weight(500, 3.0, 80) == 3.0
    assert consistency_weight(10, 0.0, 80) == 0.0
    with pytest.raises(ValueError, match="max consistency weight must be >= 0"):
        consistency_weight(10, -1.0, 80)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ramp_up(-1, 10),
        lambda: ramp_down(-0.5, 100, 30),
        lambda: learning_rate(-1, 1e-3, 100, 10, 10),
        lambda: learning_rate(-1, 1e-3, 100),
        lambda: adam_betas(-2, 100, 10, 10),
        lambda: adam_betas(-2, 100),
        lambda: consistency_weight(-1, 1.0, 10),
        lambda: consistency_weight(-1, 0.0, 10),
    ],
    ids=["ramp_up", "ramp_down", "lr", "lr_no_ramps", "adam", "adam_no_ramps", "omega", "omega_zero"],
)
def test_negative_epoch_raises(call):
    with pytest.raises(ValueError, match="epoch must be >= 0, got -"):
        call()


def test_bad_ramp_lengths_raise():
    with pytest.raises(ValueError, match="ramp-up length must be >= 0"):
        ramp_up(1, -5)
    with pytest.raises(ValueError, match="ramp-down length must be in"):
        ramp_down(1, 100, 150)
    with pytest.raises(ValueError, match="ramp-down length must be in"):
        ramp_down(1, 100, -1)
