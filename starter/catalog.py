"""What we sell: plans, credit packs and what each feature costs.

This is the file a forker edits first. Money is in integer cents, credits are integers.
Stripe Checkout is built from these entries with inline ``price_data``; set ``stripe_price_id``
(or run ``flask billing sync``) to use prices configured in Stripe instead.
"""

from __future__ import annotations

from dataclasses import dataclass

CURRENCY = "usd"


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    monthly_price_cents: int
    monthly_credits: int
    description: str = ""
    rollover: bool = False  # unused plan credits carry into the next period when True
    stripe_price_id: str | None = None

    @property
    def is_free(self) -> bool:
        return self.monthly_price_cents == 0

    @property
    def product_name(self) -> str:
        """What Stripe Checkout and the invoice call it."""
        return f"{self.name} plan: {self.monthly_credits:,} credits a month"


@dataclass(frozen=True)
class Pack:
    code: str
    name: str
    credits: int
    bonus_credits: int
    price_cents: int
    stripe_price_id: str | None = None

    @property
    def total_credits(self) -> int:
        return self.credits + self.bonus_credits

    @property
    def product_name(self) -> str:
        """What Stripe Checkout and the receipt call it."""
        return f"{self.name}: {self.total_credits:,} credits"

    @property
    def cents_per_1000_credits(self) -> int:
        return round(self.price_cents * 1000 / self.total_credits)


@dataclass(frozen=True)
class Feature:
    code: str
    name: str
    credits: int


PLANS: dict[str, Plan] = {
    plan.code: plan
    for plan in (
        Plan("free", "Free", 0, 100, "Try everything, 100 credits every month."),
        Plan("starter", "Starter", 1_900, 2_000, "For side projects: 2,000 credits a month."),
        Plan("pro", "Pro", 4_900, 6_000, "For teams in production: 6,000 credits a month."),
    )
}

FREE_PLAN = PLANS["free"]

PACKS: dict[str, Pack] = {
    pack.code: pack
    for pack in (
        Pack("small", "Small pack", 500, 0, 500),
        Pack("medium", "Medium pack", 2_000, 200, 1_800),
        Pack("large", "Large pack", 10_000, 2_000, 7_900),
    )
}

FEATURES: dict[str, Feature] = {
    feature.code: feature
    for feature in (
        Feature("ai_generation", "AI generation", 10),
        Feature("image_upscale", "Image upscale", 25),
        Feature("export_pdf", "PDF export", 2),
    )
}


def plan(code: str) -> Plan | None:
    return PLANS.get(code)


def pack(code: str) -> Pack | None:
    return PACKS.get(code)


def feature(code: str) -> Feature | None:
    return FEATURES.get(code)
