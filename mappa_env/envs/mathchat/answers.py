"""Rule-based answer checking for ``mathchat-v0``: the last ``\\boxed{...}`` of a reply against a reference.

Never an LLM. Mathematical answers are compared with ``math-verify`` (Hugging Face): the reference is
parsed as the *gold* and the boxed text as the *prediction*, and ``verify(gold, prediction)`` is called
in that order, because it is not symmetric (assignments such as ``x = 5`` and equations converted to
intervals are simplified on one side only). Equivalences it accepts include ``1,000`` = ``1000`` =
``1000.0``; ``\\frac{3}{4}`` = ``3/4`` = ``0.75``; ``2\\sqrt{2}`` = ``\\sqrt{8}``; ``2\\pi`` = ``2π``;
intervals (``[1, 3)`` is not ``[1, 3]``); sets in any order (``\\{1, 2\\}`` = ``1, 2``); ``x = 5`` = ``5``;
LaTeX units (``5\\text{ cm}``) and ``\\$``; percentages (``12\\%`` = ``0.12``); floats within 6 decimals.
Before parsing, both sides get small normalisations math-verify lacks: digit groups separated by spaces
or ``\\,`` (``1 000``), scientific notation (``1e3``), a trailing period, a unicode minus, and trailing
plain-word units (``42 legs``).

An answer must be final: where the reference is a number, a boxed arithmetic expression (``76 + 80`` for
156, ``2^3`` or ``12/4`` for an integer) is wrong, although sympy evaluates it to the same number.
Otherwise boxing the question itself would pass, the first thing a policy trained on this checker
learns (a sampled SmolLM2 verifier did it unprompted). A fraction stays a final answer for a
non-integer reference (``3/4`` for 0.75), and so does scientific notation (``1e3``, ``2 \times 10^{5}``).

Text answers: a reference made only of words (``"No"``, ``"The limit does not exist"``) is compared as
text, case-, punctuation- and ``\\text{}``-insensitively; the exact phrase is needed.

Timeouts: math-verify's own timeouts use ``signal.alarm``, which raises outside the main thread (the
trainer steps environments in threads) and would also steal the process's ``SIGALRM``. They are off
here (``parsing_timeout=None``, ``timeout_seconds=None``); instead an answer longer than
:data:`MAX_ANSWER_CHARS` is refused unparsed, and a parsed answer whose numbers would have more than
:data:`MAX_DIGITS` digits (``9^{9^{9^9}}``, ``10^{10^{10}}!``) is refused before sympy tries to evaluate
it. Both count as invalid, with the reason. This module imports math-verify when it is imported; it is
imported only when a math environment is made.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import math_verify
import sympy
from math_verify import parse, verify

from mappa_env.text import strip_thinking

#: Longest boxed answer that is parsed at all (longer ones are invalid: a pathological-input guard).
MAX_ANSWER_CHARS = 1000
#: Largest number of digits a number in a parsed answer may reach before it is refused unevaluated.
MAX_DIGITS = 10_000
# Largest exponent, factorial argument or number of terms of a sum or product allowed in an answer.
_MAX_EXPONENT = 10_000

# We disable math-verify's signal-based timeouts on purpose (see the module docstring); its warning
# about that would otherwise be logged on the first call of every process.
math_verify.parser.TIMEOUT_WARNING_SHOWN = True
math_verify.grader.TIMEOUT_WARNING_SHOWN = True

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class AnswerCheck:
    """The outcome of checking one reply against a reference.

    Attributes:
        valid: an answer was found in the reply and could be parsed.
        correct: the answer equals the reference (never True when ``valid`` is False).
        reason: ``"correct"``, ``"wrong: expected X, got Y"``, or why the answer is not valid.
        answer: the text inside the last ``\\boxed{}`` (None when there is none).
        parsed: the parsed value as text (sympy's ``str``, or the normalised words of a text answer);
            None when nothing was parsed.
    """

    valid: bool
    correct: bool
    reason: str
    answer: str | None = None
    parsed: str | None = None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) of ``text``, thinking removed first.

    Braces are balanced, so nested braces (``\\boxed{\\frac{1}{2}}``) are kept. A box left unclosed at
    the end of the text (a reply cut at the length limit) does not count. Returns None without a box.
    """
    text = strip_thinking(text)
    for match in reversed(list(_BOX_RE.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{" and text[i - 1] != "\\":
                depth += 1
            elif text[i] == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def check_answer(reference: str, reply: str) -> AnswerCheck:
    """Check the last boxed answer of ``reply`` against ``reference`` (the gold answer, as text).

    Never raises on a bad reply: a missing, empty, overlong, unparsable or too-large answer gives
    ``valid=False`` with the reason. Safe to call from any thread.
    """
    answer = last_boxed(reply)
    if answer is None:
        return AnswerCheck(False, False, "no \\boxed{...} answer in the reply")
    if not answer.strip():
        return AnswerCheck(False, False, "the \\boxed{} answer is empty", answer=answer)
    if len(answer) > MAX_ANSWER_CHARS:
        return AnswerCheck(False, False, f"the boxed answer is longer than {MAX_ANSWER_CHARS} characters; not parsed",
                           answer=answer)
    if is_text_answer(reference):
        return _check_text(reference, answer)

    gold = _parse(reference)
    prediction = _parse(answer)
    if not _has_math(prediction):
        return AnswerCheck(False, False, f"could not parse the boxed answer {_short(answer)!r} as mathematics",
                           answer=answer)
    parsed = str(next(p for p in prediction if not isinstance(p, str)))
    if _too_large(prediction):
        return AnswerCheck(False, False, f"the boxed answer {_short(answer)!r} is too large to evaluate "
                           f"(a number over {MAX_DIGITS} digits, or an exponent or factorial over {_MAX_EXPONENT})", answer=answer, parsed=_short(parsed))
    if not _has_math(gold):
        # A reference math-verify cannot read: compare the normalised texts rather than fail the episode.
        correct = _normalize(reference) == _normalize(answer)
    else:
        correct = verify(gold, prediction, timeout_seconds=None)  # gold first: verify is not symmetric
        if correct and _unevaluated(answer, gold):
            return AnswerCheck(True, False, f"wrong: expected {_short(reference)}, got {_short(answer)}, an expression "
                               "left unevaluated (box the number it comes to)", answer=answer, parsed=parsed)
    if correct:
        return AnswerCheck(True, True, "correct", answer=answer, parsed=parsed)
    return AnswerCheck(True, False, f"wrong: expected {_short(reference)}, got {_short(answer)}", answer=answer,
                       parsed=parsed)


# --- final answers ----------------------------------------------------------------------------------

# an operation between two operands: "76 + 80", "(3)(4)", "2^3", "4 \times 5", "7 - -2"
_OPERATION_RE = re.compile(r"(?:[\d.)}])\s*(?:[-+*×·÷^]|\\times|\\cdot|\\div)\s*[-+({]*\s*\d|\)\s*\(")
_DIVISION_RE = re.compile(r"\d\s*/\s*[-+(]*\d|\\[dt]?frac")
_SCIENTIFIC_RE = re.compile(r"^-?\d+(?:\.\d+)?\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{?\s*[-+]?\d+\s*\}?$")


def _unevaluated(answer: str, gold: list) -> bool:
    """Whether ``answer`` is an arithmetic expression where the reference is a plain number. In an equation
    (``6 + 5 = 11``, ``x = 76 + 80``) its last side is the answer it states, so that side is the one judged."""
    numbers = [g for g in gold if isinstance(g, sympy.Number)]
    if not numbers:
        return False  # a symbolic reference (2\sqrt{2}, an interval): any equivalent form is an answer
    text = _normalize(answer.rsplit("=", 1)[-1])
    if _SCIENTIFIC_RE.match(text):
        return False
    if _OPERATION_RE.search(text):
        return True
    return bool(numbers[0].is_integer) and bool(_DIVISION_RE.search(text))


# --- normalisation -----------------------------------------------------------------------------------

_GROUPED_INT_RE = re.compile(r"^(-?\d{1,3})((?:(?:\s|\\,|\\ |~|\\;|\\!|\{,\}|,)\d{3})+)(\.\d+)?$")
_GROUP_SEP_RE = re.compile(r"\s|\\,|\\ |~|\\;|\\!|\{,\}|,")
_SCI_RE = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)$")
_WORD_UNITS_RE = re.compile(r"^(-?[\d.,]+)\s+[A-Za-z][A-Za-z\s]*\.?$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textit)\s*\{([^{}]*)\}")
_TEXT_ANSWER_RE = re.compile(r"^[A-Za-z][A-Za-z\s'’,.!;-]*$")
_MATH_WORDS = {"pi", "infty", "inf", "infinity", "oo", "e", "i"}
_FUNCTION_WORDS = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "floor", "ceil", "mod", "gcd",
                   "lcm", "max", "min", "sum", "prod", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh"}


def _normalize(text: str) -> str:
    """Small rewrites math-verify does not do itself; applied to the reference and to the answer."""
    s = text.strip().replace("−", "-").replace("\u2009", " ").replace("\u202f", " ").replace("\u00a0", " ")
    s = s.strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    if m := _GROUPED_INT_RE.match(s):
        s = m.group(1) + _GROUP_SEP_RE.sub("", m.group(2)) + (m.group(3) or "")
    if m := _SCI_RE.match(s):
        s = f"{m.group(1)} \\times 10^{{{m.group(2)}}}"
    if m := _WORD_UNITS_RE.match(s):
        s = m.group(1)
    return s


def is_text_answer(reference: str) -> bool:
    """Whether ``reference`` is words rather than mathematics (compared as text, not by math-verify)."""
    s = _TEXT_WRAP_RE.sub(r"\1", reference).strip()
    if "\\" in s:
        return False
    words = re.findall(r"[A-Za-z]+", s)
    if _TEXT_ANSWER_RE.match(s):  # only words: "No", "Monotonically increasing"
        return any(len(w) >= 2 for w in words) and not all(w.lower() in _MATH_WORDS for w in words)
    # A sentence with a number in it ("Always greater than 20"): math-verify would pick the number out.
    return len([w for w in words if len(w) >= 3 and w.lower() not in _FUNCTION_WORDS]) >= 2


def _text_key(text: str) -> str:
    s = _TEXT_WRAP_RE.sub(r"\1", text)
    s = re.sub(r"[\\$.,!;:'’\"]", " ", s.lower())
    return " ".join(s.split())


def _check_text(reference: str, answer: str) -> AnswerCheck:
    key = _text_key(answer)
    if not key:
        return AnswerCheck(False, False, f"the boxed answer {_short(answer)!r} has no words", answer=answer)
    if key == _text_key(reference):
        return AnswerCheck(True, True, "correct", answer=answer, parsed=key)
    return AnswerCheck(True, False, f"wrong: expected {_short(reference)}, got {_short(answer)}", answer=answer,
                       parsed=key)


def _parse(text: str) -> list:
    # The boxed wrapper makes math-verify read the whole text as one LaTeX answer (plain text such as
    # "3/4" or "2^(n-1)" parses too); without it, it would look for anchors and numbers in running text.
    return parse(f"\\boxed{{{_normalize(text)}}}", parsing_timeout=None)


def _has_math(parsed: list) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the size guard ----------------------------------------------------------------------------------


def _too_large(parsed: list) -> bool:
    return any(not isinstance(p, str) and _digits(p) > MAX_DIGITS for p in parsed)


def _digits(expr) -> float:
    """An upper bound on the number of decimal digits of ``expr``'s value (0 for a bare symbol).

    Only the structure is read and nothing is evaluated, so the bound is cheap on any input. Powers
    whose exponent exceeds :data:`_MAX_EXPONENT` count as too large even on a symbol, as sympy may try
    to expand them (``(x+1)^{10^8}``).
    """
    if isinstance(expr, sympy.MatrixBase):
        return max((_digits(e) for e in expr), default=0.0)
    if not isinstance(expr, sympy.Basic):
        return 0.0
    if isinstance(expr, sympy.Integer):
        return math.log10(abs(int(expr)) + 1)
    if isinstance(expr, sympy.Rational):
        return _digits(sympy.Integer(expr.p)) + _digits(sympy.Integer(expr.q))
    if isinstance(expr, sympy.Float):
        return math.log10(abs(float(expr)) + 1) if expr.is_finite else 0.0
    if isinstance(expr, sympy.Pow):
        exponent = _digits(expr.exp)
        if exponent > math.log10(_MAX_EXPONENT + 1):
            return math.inf
        return _digits(expr.base) * 10**exponent
    if isinstance(expr, (sympy.factorial, sympy.gamma, sympy.factorial2, sympy.subfactorial)):
        n = 10 ** _digits(expr.args[0])
        return math.inf if n > _MAX_EXPONENT else n * max(math.log10(n), 1.0)
    if isinstance(expr, (sympy.Sum, sympy.Product)):
        terms = 10 ** max((_digits(b) for lim in expr.limits for b in lim[1:]), default=0.0)
        if terms > _MAX_EXPONENT:
            return math.inf
        return _digits(expr.function) * terms if isinstance(expr, sympy.Product) else _digits(expr.function) + math.log10(terms)
    return sum(_digits(arg) for arg in expr.args)
