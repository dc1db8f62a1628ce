"""Speeds that hold up: warm-up, interleaved rounds, the median and the interquartile range.

A single timing of a forward loop swings by whole factors on a shared machine (another process,
a frequency change, the allocator's first touches). Comparing two models measured minutes apart
swings even more. So contenders run in alternating rounds (A B, B A, A B, ...: drift hits both
alike), after a warm-up round each, and every figure is the median over rounds with its IQR. A
ratio is the median of the per-round ratios, which cancels what the two rounds of a pair shared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

UNRELIABLE_SPREAD = 0.10  # an IQR above 10% of the median: the machine was not quiet


@dataclass(frozen=True)
class Spread:
    """A distribution over rounds: median, quartiles, and the values themselves."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q1, _, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr(self) -> float:
        q1, q3 = self.quartiles
        return q3 - q1

    @property
    def relative_iqr(self) -> float:
        return self.iqr / abs(self.median) if self.median else float("inf")

    @property
    def reliable(self) -> bool:
        return self.relative_iqr <= UNRELIABLE_SPREAD


def interleaved_rates(
    contenders: dict[str, Callable[[], int]],
    rounds: int,
    *,
    warmup: int = 1,
    synchronize: Callable[[], None] = lambda: None,
) -> dict[str, Spread]:
    """Items per second of each contender over `rounds` alternating rounds.

    Each contender is a callable that does one round of work and returns how many items it
    processed. The order of the contenders is reversed every other round.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    synchronize()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            started = time.perf_counter()
            items = contenders[name]()
            synchronize()
            rates[name].append(items / (time.perf_counter() - started))
    return {name: Spread(tuple(values)) for name, values in rates.items()}


def ratio(numerator: Spread, denominator: Spread) -> Spread:
    """The per-round ratios numerator / denominator (rounds are paired by position)."""
    return Spread(tuple(a / b for a, b in zip(numerator.values, denominator.values, strict=True)))


def spread_warning(name: str, spread: Spread) -> str | None:
    """A sentence for the run summary when a figure's spread is too wide to trust."""
    if spread.reliable:
        return None
    return (
        f"{name}: the IQR over {len(spread.values)} rounds is {100 * spread.relative_iqr:.0f}% of the median "
        f"(> {100 * UNRELIABLE_SPREAD:.0f}%): the machine was busy; do not trust this figure"
    )
