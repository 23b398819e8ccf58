"""The one rule that mixes a run's seed with counters (epoch, batch, rank, pass, stream) into a generator seed.

Plain arithmetic, no I/O. Every seeded stream of a run (the training order, the augmentation draws, the labelled
choice, the unlabelled and backward streams, the D_Y pool) derives its seed here, so that the streams of one run
are independent of each other, each a function of the seed and its counters only: a resumed run draws what it
would have drawn, with no RNG state in the checkpoint.
"""

from __future__ import annotations

__all__ = ["SEED_MODULUS", "SEED_MULTIPLIER", "mix_seed"]

SEED_MULTIPLIER = 1_000_003  # a prime: distinct counters give distinct seeds while the counters stay below it
SEED_MODULUS = 2**63  # torch.Generator.manual_seed takes any int64; keep the mixed seed in range


def mix_seed(*parts: int, multiplier: int = SEED_MULTIPLIER, modulus: int | None = SEED_MODULUS) -> int:
    """parts[0] * m^(n-1) + parts[1] * m^(n-2) + ... + parts[-1] (Horner's rule, m = `multiplier`), reduced mod
    `modulus` (None: not reduced). E.g. mix_seed(s, e, b) = ((s * m + e) * m + b) % 2**63.

    Reducing once at the end equals reducing after every step (arithmetic mod 2**63), so a mixed seed may itself
    be mixed further, with another multiplier, and give the number the whole expression gives."""
    if not parts:
        raise ValueError("mix_seed needs at least one part")
    key = parts[0]
    for part in parts[1:]:
        key = key * multiplier + part
    return key % modulus if modulus is not None else key
