"""Token counts and the cost of one answer.

Counts come from the vendor's usage report when it sends one; otherwise they are estimated with the embedding
model's own tokenizer (a word-piece tokenizer: close to, not equal to, a chat model's BPE count), and the message
says which (`tokens_estimated`). Prices are USD per million tokens, list prices of the vendors; a provider entry may
override them (`price_in`, `price_out`), and self-hosted endpoints (Ollama, vLLM, LM Studio) cost nothing.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

# (input, output) USD per 1M tokens. Longest matching prefix wins.
PRICE_TABLE: dict[str, tuple[str, str]] = {
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4.1-nano": ("0.10", "0.40"),
    "gpt-4.1-mini": ("0.40", "1.60"),
    "gpt-4.1": ("2.00", "8.00"),
    "gpt-5-nano": ("0.05", "0.40"),
    "gpt-5-mini": ("0.25", "2.00"),
    "gpt-5": ("1.25", "10.00"),
    "gpt-3.5-turbo": ("0.50", "1.50"),
    "o4-mini": ("1.10", "4.40"),
    "claude-3-haiku": ("0.25", "1.25"),
    "claude-3-5-haiku": ("0.80", "4.00"),
    "claude-haiku-4": ("1.00", "5.00"),
    "claude-3-5-sonnet": ("3.00", "15.00"),
    "claude-3-7-sonnet": ("3.00", "15.00"),
    "claude-sonnet-4": ("3.00", "15.00"),
    "claude-opus-4": ("15.00", "75.00"),
}
MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.000001")  # Message.cost has six decimal places


def model_prices(model: str) -> tuple[Decimal, Decimal]:
    """List price per million (input, output) tokens; unknown models cost nothing (self-hosted or unlisted)."""
    name = model.lower().split("/")[-1]  # "openai/gpt-4o-mini" style names of routers
    best = ""
    for prefix in PRICE_TABLE:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return Decimal(0), Decimal(0)
    price_in, price_out = PRICE_TABLE[best]
    return Decimal(price_in), Decimal(price_out)


def answer_cost(
    *, model: str, tokens_in: int, tokens_out: int, price_in: float | None = None, price_out: float | None = None
) -> Decimal:
    listed_in, listed_out = model_prices(model)
    per_in = Decimal(str(price_in)) if price_in is not None else listed_in
    per_out = Decimal(str(price_out)) if price_out is not None else listed_out
    cost = (per_in * tokens_in + per_out * tokens_out) / MILLION
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


_WORDISH = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def token_count_estimate(text: str) -> int:
    """Tokens of `text` by the embedding model's tokenizer; a word-and-punctuation count if it is unavailable."""
    if not text:
        return 0
    try:
        from documents.embedding import embedder

        return int(embedder().count_tokens(text))
    except Exception:  # the embedder is optional here: a count must never fail an answer
        return len(_WORDISH.findall(text))
