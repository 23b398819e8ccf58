"""stats: the Student t quantile against closed forms and printed tables, intervals on constructed numbers."""

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cycleseg.core.stats import format_interval, mean_interval, paired_difference, t_cdf, t_quantile

# The 97.5 % quantile as printed in t tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2), 3 decimals.
TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 29: 2.045, 100: 1.984}


@pytest.mark.parametrize(("df", "expected"), sorted(TABLE_975.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("p", [0.51, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995])
def test_t_quantile_matches_closed_forms(p):
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    alpha = 4 * p * (1 - p)  # df = 4 (Hill 1970 / Shaw 2006)
    q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
    assert t_quantile(p, 4) == pytest.approx(2 * math.sqrt(q - 1), rel=1e-9)


def test_t_quantile_tends_to_the_normal_and_is_symmetric():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.025, 3) == -t_quantile(0.975, 3)
    assert t_quantile(0.5, 7) == 0.0
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            t_quantile(bad, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.9, 0)


@given(st.floats(0.001, 0.999), st.sampled_from([1, 2, 3, 5, 8, 30, 200]))
@example(0.49918101247906466, 1)  # near 0.5: t_cdf lost 1.6e-12 to 1 - x when it took I_x(df/2, 1/2) there
@example(0.49918101247906466, 200)
def test_t_cdf_inverts_t_quantile(p, df):
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_interval_of_one_two_three():
    iv = mean_interval([1, 2, 3])
    assert (iv.n, iv.mean, iv.sd) == (3, 2.0, 1.0)
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)  # 2.484
    assert iv.half_width == pytest.approx(2.484, abs=1e-3)
    assert (iv.low, iv.high) == pytest.approx((2 - 2.4841377, 2 + 2.4841377))
    assert not iv.excludes_zero  # [-0.48, 4.48]
    assert format_interval(iv, 1) == "2.0 ± 2.5"


def test_interval_edge_cases():
    assert mean_interval([]).mean is None and format_interval(mean_interval([]), 1) == "-"
    one = mean_interval([4.25])
    assert (one.mean, one.half_width, one.low, one.excludes_zero) == (4.25, None, None, False)
    assert format_interval(one, 1) == "4.2"  # one seed: the number alone, as without seeds
    assert mean_interval([None, 1.0, float("nan"), 3.0]).values == (1.0, 3.0)  # missing metrics left out
    two = mean_interval([10.0, 12.0])  # sd sqrt(2), t_{0.975,1} = 12.706
    assert two.half_width == pytest.approx(12.7062047 * math.sqrt(2) / math.sqrt(2))
    equal = mean_interval([5.0, 5.0, 5.0])
    assert equal.half_width == 0.0 and equal.excludes_zero
    assert mean_interval([1, 2, 3], confidence=0.9).half_width == pytest.approx(2.919986 / math.sqrt(3), abs=1e-6)


def test_paired_difference_removes_the_shared_seed_effect():
    # Each seed shifts both configurations alike; the noise row is 1.0 better on every seed, up to +-0.1.
    nonoise = {0: 10.0, 1: 20.0, 2: 30.0, 3: 15.0}
    quant = {0: 11.1, 1: 20.9, 2: 31.0, 4: 99.0}  # seed 3 missing here, seed 4 missing there: not paired
    diff = paired_difference(quant, nonoise)
    assert diff.seeds == (0, 1, 2)
    assert diff.interval.mean == pytest.approx(1.0)
    assert diff.interval.sd == pytest.approx(0.1)
    assert diff.interval.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert diff.excludes_zero  # [0.75, 1.25]
    unpaired = mean_interval([quant[s] for s in (0, 1, 2)])  # the same numbers unpaired: swamped by the seeds
    assert unpaired.half_width > 20
    assert format_interval(diff.interval, 2, sign=True) == "+1.00 ± 0.25"
    worse = paired_difference({0: 1.0, 1: 3.0}, {0: 2.0, 1: 2.0})  # -1 and +1
    assert worse.interval.mean == 0.0 and not worse.excludes_zero
    assert paired_difference({0: None}, {0: 1.0}).interval.n == 0


def test_paired_t_p_value_detectable_effect_and_holm_by_hand():
    from cycleseg.core.stats import detectable_effect, holm, t_p_value

    # [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 3 sqrt(2) = 4.2426, df 4;
    # two-sided p = 2 P(T4 > 4.2426) = 0.013236 (closed form for df 4: P(T > t) = 1/2 - x (1 + (1 - x^2) / 2) / 2
    # with x = t / sqrt(t^2 + 4)); the 97.5 % and 80 % quantiles of t4 are 2.776445 and 0.940965
    iv = mean_interval([1, 2, 3, 4, 5])
    t = 3 * math.sqrt(2)
    x = t / math.sqrt(t * t + 4)
    assert t_p_value(iv) == pytest.approx(2 * (0.5 - x * (1 + (1 - x * x) / 2) / 2), rel=1e-9)
    assert t_p_value(iv) == pytest.approx(0.013236, abs=1e-6)
    assert detectable_effect(iv) == pytest.approx((2.776445 + 0.940965) * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert t_p_value(mean_interval([2.0])) is None and detectable_effect(mean_interval([2.0])) is None
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06, "d": None})  # 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}  # capped at 1


def test_t_power_is_the_tests_size_at_zero_and_matches_a_simulation():
    from cycleseg.core.stats import t_power

    assert t_power(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-6)  # at no effect, the level itself
    assert t_power(0.0, 1.0, 2) == pytest.approx(0.05, abs=1e-4)  # df = 1: the pole of V's density at 0
    # 2,000,000 draws of (Z + d) / sqrt(V / df) (numpy, seed 0) gave 0.2252 (n = 3) and 0.8152 (n = 8) for an
    # effect of 5.7 with SD 4.831 (docs/study.md's 2-bit mIoU differences); binomial SE 0.0003
    sd = 12.0 * math.sqrt(3) / 4.302653
    assert t_power(5.7, sd, 3) == pytest.approx(0.2252, abs=0.0015)
    assert t_power(5.7, sd, 8) == pytest.approx(0.8152, abs=0.0015)
    assert t_power(-5.7, sd, 8) == pytest.approx(t_power(5.7, sd, 8), abs=1e-12)  # two-sided
