"""Statistics over seeds: the mean with its Student-t confidence interval, and paired differences.

Pure Python (the `math` module only), no dependency on the rest of the package. The Student t quantile that
the interval needs is computed from the t distribution's CDF, which is the regularized incomplete beta
function I_x(df/2, 1/2) with x = df / (df + t^2) (Abramowitz & Stegun 26.7.1; the continued fraction of
A&S 26.5.8 evaluated with the modified Lentz method, as in Numerical Recipes' `betacf`), inverted by bisection
to full double precision. SciPy is not a dependency of cycleseg and `torch.distributions.StudentT` has no
`icdf`, hence this small implementation; tests/test_stats.py checks it against closed forms (df = 1, 2, 4)
and printed t tables.

How to read an interval: with n seeds of a configuration, `mean ± half_width` is the 95 % confidence interval
of the configuration's expected result over seeds, half_width = t_{0.975, n-1} * sd / sqrt(n) (sd with n - 1
in the denominator). A paired difference subtracts, seed by seed, one configuration's result from another's
(same seed: the same initial weights and data order), which removes the part of the seed-to-seed spread the
two share; when its interval excludes 0 the difference is unlikely (at 5 %) to be seed noise alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Interval", "PairedDifference", "detectable_effect", "format_interval", "holm", "mean_interval",
           "paired_difference", "t_cdf", "t_p_value", "t_power", "t_quantile"]

CONFIDENCE = 0.95


# ----------------------------------------------------------------------------------------- the t distribution

def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with `df` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    x, y = df / (df + t * t), t * t / (df + t * t)  # y = 1 - x without the cancellation of 1 - x near t = 0
    if x > 0.5:  # |t| < sqrt(df): P(|T| < |t|) = I_y(1/2, df/2) from its own small argument
        centre = 0.5 * _betainc(0.5, df / 2.0, y)  # P(0 < T < |t|)
        return 0.5 + centre if t > 0 else 0.5 - centre
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1) for Student's t with `df` > 0 degrees of freedom.

    t_quantile(0.975, 2) = 4.302653 (the 95 % two-sided critical value for 3 samples).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # bracket: the CDF is increasing
        low, high = high, high * 2.0
    for _ in range(200):  # bisection to the last bit
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


# ------------------------------------------------------------------------------------------------- intervals

@dataclass(frozen=True)
class Interval:
    """The mean of `values` and its Student-t confidence interval (half_width None for fewer than 2 values)."""

    values: tuple[float, ...]
    mean: float | None
    sd: float | None  # sample standard deviation (n - 1 in the denominator); None for fewer than 2 values
    half_width: float | None
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (False when there is no interval)."""
        return self.half_width is not None and (self.low > 0 or self.high < 0)


def mean_interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Interval:
    """Mean and `confidence` interval (Student t, n - 1 degrees of freedom) of the finite numbers in `values`.

    None, NaN and infinities are left out (a metric a run does not have). mean_interval([1, 2, 3]): mean 2,
    sd 1, half-width t_{0.975,2} / sqrt(3) = 2.484.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    kept = tuple(float(v) for v in values if v is not None and math.isfinite(v))
    n = len(kept)
    if n == 0:
        return Interval((), None, None, None, confidence)
    mean = math.fsum(kept) / n
    if n == 1:
        return Interval(kept, mean, None, None, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(kept, mean, sd, half, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """`a - b` seed by seed over the seeds both have, with the interval of its mean."""

    seeds: tuple[int, ...]
    interval: Interval

    @property
    def excludes_zero(self) -> bool:
        return self.interval.excludes_zero


def paired_difference(a: Mapping[int, float | None], b: Mapping[int, float | None],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """The per-seed differences a[seed] - b[seed] over the seeds where both are finite numbers, and the
    Student-t interval of their mean (a paired t interval)."""
    seeds = tuple(sorted(s for s in a if s in b and _finite(a[s]) and _finite(b[s])))
    return PairedDifference(seeds, mean_interval([a[s] - b[s] for s in seeds], confidence))


def t_p_value(interval: Interval) -> float | None:
    """Two-sided p-value of the one-sample t test of mean 0 (for a PairedDifference's interval: the paired t
    test); None with fewer than 2 values; 0 when every value is the same non-zero number."""
    if interval.sd is None or interval.mean is None:
        return None
    if interval.sd == 0:
        return 1.0 if interval.mean == 0 else 0.0
    t = interval.mean / (interval.sd / math.sqrt(interval.n))
    return 2.0 * t_cdf(-abs(t), interval.n - 1)


def detectable_effect(interval: Interval, power: float = 0.8, alpha: float = 1 - CONFIDENCE) -> float | None:
    """The smallest true mean a two-sided t test at level `alpha` finds with probability `power`, with n values
    of this interval's SD: (t_{1 - alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n) (the usual approximation of the
    noncentral t). For 5 seeds, 80 % power: (2.776 + 0.941) sd / sqrt(5) = 1.66 sd. None with fewer than 2 values."""
    if interval.sd is None:
        return None
    df = interval.n - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * interval.sd / math.sqrt(interval.n)


def t_power(effect: float, sd: float, n: int, alpha: float = 1 - CONFIDENCE, steps: int = 4000) -> float:
    """Power of the two-sided one-sample (paired) t test at level `alpha` with n values of SD `sd` when the true
    mean is `effect`: P(|T'| > t_{1 - alpha/2, n-1}) for the noncentral t T' = (Z + d) / sqrt(V / df),
    d = effect sqrt(n) / sd, V chi-square with df = n - 1 degrees of freedom. Computed exactly up to quadrature:
    the normal tail averaged over V (Simpson's rule in u = sqrt(V), which keeps df = 1 free of its pole at 0).
    E.g. 3 seeds, SD 4.83, effect 5.7: 0.22; 8 seeds: 0.82."""
    if n < 2 or sd <= 0:
        raise ValueError(f"need n >= 2 values and sd > 0, got n={n}, sd={sd}")
    df = n - 1
    c, d = t_quantile(1 - alpha / 2, df), effect * math.sqrt(n) / sd
    log_norm = (df / 2) * math.log(2) + math.lgamma(df / 2)

    def integrand(u: float) -> float:  # 2u f_V(u^2) P(|T'| > c | V = u^2)
        if u == 0.0:
            return 0.0 if df > 1 else 2 * math.exp(-log_norm) * _normal_tails(c * 0.0, d)
        v = u * u
        density = math.exp((df / 2 - 1) * math.log(v) - v / 2 - log_norm)
        return 2 * u * density * _normal_tails(c * math.sqrt(v / df), d)

    top = math.sqrt(df + 12 * math.sqrt(2 * df) + 40)  # V beyond top^2 has negligible probability
    h = top / steps
    total = integrand(0.0) + integrand(top)
    total += sum((4 if k % 2 else 2) * integrand(k * h) for k in range(1, steps))
    return min(1.0, total * h / 3)


def _normal_tails(x: float, shift: float) -> float:
    """P(Z + shift > x) + P(Z + shift < -x) for a standard normal Z."""
    def phi(z: float) -> float:
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return (1 - phi(x - shift)) + phi(-x - shift)


def holm(p_values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of several p-values (family-wise error): the k-th smallest of m is multiplied
    by m - k + 1, then made non-decreasing and capped at 1. None stays None and does not count in m."""
    known = sorted((p, name) for name, p in p_values.items() if p is not None)
    adjusted: dict[str, float | None] = {name: None for name in p_values}
    running = 0.0
    for k, (p, name) in enumerate(known):
        running = max(running, min(1.0, (len(known) - k) * p))
        adjusted[name] = running
    return adjusted


def format_interval(interval: Interval, digits: int, sign: bool = False, missing: str = "-") -> str:
    """"20.1 ± 2.3" (n >= 2), "20.1" (one value), `missing` (none); `sign`: "+1.2 ± 0.4"."""
    if interval.mean is None:
        return missing
    mean = f"{interval.mean:+.{digits}f}" if sign else f"{interval.mean:.{digits}f}"
    return mean if interval.half_width is None else f"{mean} ± {interval.half_width:.{digits}f}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
