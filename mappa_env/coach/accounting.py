"""What coaching costs: a persistent response cache, token prices, and running counters.

The cache is keyed by the full request (model, messages, sampling parameters), so repeating an
evaluation costs nothing; entries are small JSON files written atomically, safe to share between
processes. Prices are dollars per million tokens, configurable per model; a model without a price has
an *unknown* cost (``None``), never a made-up one.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Dollars per million (input, output) tokens for some common coach models; extend with ``prices=``.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o-mini": (0.15, 0.60),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
}


def call_cost(model: str, prompt_tokens: int, completion_tokens: int, prices: dict[str, tuple[float, float]]) -> float | None:
    """Dollar cost of one call, or None when the model has no price."""
    price = prices.get(model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


class ResponseCache:
    """Coach replies on disk, one JSON file per request key (``<dir>/<k[:2]>/<k>.json``)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()

    @staticmethod
    def key(material: str) -> str:
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):  # a torn or foreign file is a miss, not a crash
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        folder = self.directory / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, ensure_ascii=False)
        os.replace(tmp, folder / f"{key}.json")


@dataclass
class CoachStats:
    """Running counters of one coach (thread-safe). ``snapshot()`` gives plain numbers for logging."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    unscored: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls_without_price: int = 0
    latencies_s: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_call(self, *, prompt_tokens: int, completion_tokens: int, cost: float | None, latency_s: float) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if cost is None:
                self.calls_without_price += 1
            else:
                self.cost_usd += cost
            self.latencies_s.append(latency_s)

    def count(self, name: str, reason: str | None = None) -> None:
        with self._lock:
            if name == "unscored":
                self.unscored[reason or "unknown"] += 1
            else:
                setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(self.latencies_s)
            return {
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "retries": self.retries,
                "reasks": self.reasks,
                "unscored": sum(self.unscored.values()),
                "unscored_by_reason": dict(self.unscored),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                # unknown when any call had no price: a partial sum would understate the bill
                "cost_usd": None if self.calls_without_price else round(self.cost_usd, 6),
                "latency_median_s": statistics.median(latencies) if latencies else None,
                "latency_p90_s": latencies[int(0.9 * (len(latencies) - 1))] if latencies else None,
            }
