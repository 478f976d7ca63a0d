"""The demo "AI generation": deterministic fake output, so a forker sees the billing flow, not an AI."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

WORDS = (
    "ledger",
    "credit",
    "stream",
    "insight",
    "vector",
    "draft",
    "summary",
    "signal",
    "pattern",
    "model",
    "answer",
    "quiet",
    "bright",
    "careful",
    "steady",
    "river",
    "lantern",
    "harbor",
    "meadow",
    "orbit",
    "canvas",
)


@dataclass(frozen=True)
class Generation:
    text: str
    credits: int  # what the work really cost, at most what was reserved


def fake_generation(prompt: str, max_credits: int) -> Generation:
    """The same prompt always gives the same text; longer prompts cost more, up to ``max_credits``."""
    digest = hashlib.sha256(prompt.strip().encode()).digest()
    words = [WORDS[byte % len(WORDS)] for byte in digest[:24]]
    text = " ".join(words).capitalize() + "."
    cost = max(1, min(max_credits, max_credits // 2 + len(prompt.strip()) // 40))
    return Generation(text=text, credits=cost)
