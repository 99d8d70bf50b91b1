"""A Gymnasium text space that accepts any Unicode text a language model can produce.

``gymnasium.spaces.Text`` checks every character against a charset (alphanumerics by default) and
rejects empty strings, so real prompts and completions would be "outside" the space and PettingZoo's
``api_test`` would fail. :class:`UnicodeText` accepts any ``str`` within the length bounds and samples
from a printable charset that includes whitespace, punctuation and non-ASCII letters.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

_SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n\téßçñøλπжд中文✓"


class UnicodeText(Text):
    """Any Unicode string of length ``min_length``..``max_length`` (defaults 0..1,000,000)."""

    def __init__(self, max_length: int = 1_000_000, *, min_length: int = 0, seed: Any = None):
        super().__init__(max_length=max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        # Keep samples short: a random action only needs to be a valid string.
        if mask is None and probability is None:
            length = int(self.np_random.integers(self.min_length, min(self.max_length, 64) + 1))
            chars = self.np_random.choice(list(_SAMPLE_CHARSET), size=length)
            return "".join(chars)
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )


def text_observation_space(text_space: UnicodeText | None = None) -> Any:
    """The observation space of a text team: ``Dict({"text": UnicodeText()})``."""
    from gymnasium.spaces import Dict

    return Dict({"text": text_space or UnicodeText()})
