"""What we sell: plans, credit packs and what each feature costs.

This is the file a forker edits first. Money is in integer cents, credits are integers.
Stripe Checkout is built from these entries with inline ``price_data``; set ``stripe_price_id``
(or run ``flask billing sync``) to use prices configured in Stripe instead.

Paid plans can be sold yearly (``yearly_price_cents``: paid once a year, credits still granted
month by month) and can bill metered overage (``overage_cents_per_1000``: spends past the credits,
up to the team's own cap, reported to a Stripe Billing Meter and billed on the next invoice).
"""

from __future__ import annotations

from dataclasses import dataclass

CURRENCY = "usd"
INTERVALS = ("month", "year")  # how a paid plan can be billed
OVERAGE_METER_EVENT = "credits_overage"  # the Billing Meter's event name (``flask billing sync`` creates it)


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    monthly_price_cents: int
    monthly_credits: int
    description: str = ""
    rollover: bool = False  # unused plan credits carry into the next period when True
    stripe_price_id: str | None = None
    # Billed yearly for this much (None: monthly only); its credits are still granted each month.
    yearly_price_cents: int | None = None
    # Metered overage: the price of 1,000 credits spent past the plan's (None: no overage on this plan).
    overage_cents_per_1000: int | None = None

    @property
    def is_free(self) -> bool:
        return self.monthly_price_cents == 0

    @property
    def sold_yearly(self) -> bool:
        return not self.is_free and self.yearly_price_cents is not None

    @property
    def has_overage(self) -> bool:
        return not self.is_free and bool(self.overage_cents_per_1000)

    def price_for(self, interval: str) -> int:
        """What one billing period costs: a month, or a year (``yearly_price_cents``)."""
        if interval == "year":
            if self.yearly_price_cents is None:
                raise ValueError(f"{self.code} is not sold yearly")
            return self.yearly_price_cents
        return self.monthly_price_cents

    def overage_cents(self, credits: int) -> int:
        """What ``credits`` of overage cost, rounded to the nearest cent as Stripe rounds a metered line."""
        return (credits * (self.overage_cents_per_1000 or 0) + 500) // 1000

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
        # Yearly: two months free. Overage: 1,000 extra credits for $1.20 (Starter) or $1.00 (Pro).
        Plan(
            "starter",
            "Starter",
            1_900,
            2_000,
            "For side projects: 2,000 credits a month.",
            yearly_price_cents=19_000,
            overage_cents_per_1000=120,
        ),
        Plan(
            "pro",
            "Pro",
            4_900,
            6_000,
            "For teams in production: 6,000 credits a month.",
            yearly_price_cents=49_000,
            overage_cents_per_1000=100,
        ),
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


def paid_plan_sold(code: str | None, interval: str) -> Plan | None:
    """The paid plan ``code`` if it is sold at ``interval`` (``month`` or ``year``), else None.

    For codes that come from a visitor (the pricing page's choice carried through sign-up): anything
    that is not a catalog code, a free plan or a plan not sold yearly is no choice at all.
    """
    found = PLANS.get(code) if isinstance(code, str) else None
    if found is None or found.is_free or interval not in INTERVALS or (interval == "year" and not found.sold_yearly):
        return None
    return found


def best_value_pack() -> Pack | None:
    """The pack with the lowest price per credit (the first of equals); the purchase dialog marks it."""
    return min(PACKS.values(), key=lambda p: p.price_cents / p.total_credits, default=None)


def feature(code: str) -> Feature | None:
    return FEATURES.get(code)
