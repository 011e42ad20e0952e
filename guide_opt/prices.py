"""GPU prices: $/GPU-hour quotes, each with provider, date and source.

Tables live in ``hardware_db/prices/<table>.yaml``; ``default`` is used unless a problem
names another table (``hardware.price_table``) or overrides single prices
(``hardware.prices``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PositiveFloat


class PriceQuote(BaseModel):
    """One on-demand price for one GPU at one provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str
    provider: str
    usd_per_gpu_hour: PositiveFloat
    as_of: str
    source: str


class PriceTable(BaseModel):
    """A consistent set of prices, at most one quote per GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    description: str
    quotes: list[PriceQuote]

    def usd_per_gpu_hour(self) -> dict[str, float]:
        """Map GPU id -> $/GPU-hour."""
        return {q.gpu: q.usd_per_gpu_hour for q in self.quotes}
