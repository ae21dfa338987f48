"""Who visits: shares of visitors by country, from a table or from counts in the hosts' logs.

The seed gives only the order of its GoatCounter top ten, not the numbers. The default assumes
that shares fall as 1/rank (Zipf's law, the usual shape of ranked popularity), normalised over
the ten: Australia 34%, United States 17%, Germany 11%, ... Poland 3%.
"""
from __future__ import annotations

from dataclasses import dataclass

from outpost.errors import OutpostError
from outpost.latency.places import country_code

# [latency] visitors = "logs": counted in the hosts' nginx logs by `doit latency`.
LOGS = "logs"
SEED_TOP_TEN = ["AU", "US", "DE", "GB", "NL", "FR", "IE", "JP", "CA", "PL"]
# A table's shares may add up to 1 or to 100, give or take rounding.
TOLERANCE = 0.01


@dataclass(frozen=True)
class Visitors:
    shares: dict[str, float]     # alpha-2 code -> share of visitors, adding up to 1
    source: str                  # where the shares came from, for the report


def seed_default() -> Visitors:
    weights = {code: 1 / rank for rank, code in enumerate(SEED_TOP_TEN, start=1)}
    total = sum(weights.values())
    return Visitors({c: w / total for c, w in weights.items()},
                    "the seed's GoatCounter top ten, assumed to fall as 1/rank (Zipf)")


def from_table(table: dict[str, float], where: str) -> Visitors:
    """Shares by country (code or English name) that add up to 1 or to 100."""
    if not table:
        raise OutpostError(f"{where}: no visitor shares")
    shares: dict[str, float] = {}
    for key, value in table.items():
        code = country_code(key, f"{where}: visitor country")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise OutpostError(f"{where}: share of {key!r} must be a number >= 0, "
                               f"not {value!r}")
        shares[code] = shares.get(code, 0) + value
    total = sum(shares.values())
    for scale in (1, 100):
        if abs(total - scale) <= TOLERANCE * scale:
            return Visitors({c: v / total for c, v in shares.items()}, f"the table in {where}")
    raise OutpostError(f"{where}: visitor shares add up to {total:g}, not 1 or 100")


def from_counts(counts: dict[str, int], where: str) -> Visitors:
    """Visitors (client addresses) counted per country on each host, summed: shares of the
    total."""
    summed: dict[str, int] = {}
    for key, value in counts.items():
        code = country_code(key, f"{where}: country")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OutpostError(f"{where}: count for {key!r} must be a whole number >= 0, "
                               f"not {value!r}")
        summed[code] = summed.get(code, 0) + value
    total = sum(summed.values())
    if total == 0:
        raise OutpostError(f"{where}: no visitor with a country counted")
    return Visitors({c: n / total for c, n in summed.items() if n},
                    f"{total} visitors (client addresses) counted by country in {where}")
