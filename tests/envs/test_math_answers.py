"""The rule-based answer checker of mathchat-v0 (math-verify, gold first), on a table of equivalences."""

from __future__ import annotations

import signal
import threading

import pytest

pytest.importorskip("math_verify")

from mappa_env.envs.mathchat.answers import AnswerCheck, check_answer, is_text_answer, last_boxed  # noqa: E402

# (reference, boxed answer, equivalent?) - each row is checked in the direction given; rows that make
# sense both ways appear twice, and the rows marked False must not match.
EQUIVALENCE = [
    # integers and their formatting
    ("1000", "1,000", True),
    ("1,000", "1000", True),
    ("1000", "1000.0", True),
    ("1000.0", "1000", True),
    ("1000", "1 000", True),
    ("1000", "1\\,000", True),
    ("1000", "1{,}000", True),
    ("2001000", "2,001,000", True),
    ("1000", "1e3", True),
    ("6", "6.", True),
    ("6", "06", True),
    ("42", "42 legs", True),
    ("5", "5\\text{ cm}", True),
    ("6", "\\$6", True),
    ("1000", "100", False),
    ("100", "1000", False),
    ("1176470588235294", "1176470588235295", False),
    # negative numbers
    ("-5", "-5", True),
    ("-5", "−5", True),
    ("-4", "- 4", True),
    ("-5", "5", False),
    ("5", "-5", False),
    # fractions and decimals
    ("3/4", "\\frac{3}{4}", True),
    ("\\frac{3}{4}", "3/4", True),
    ("\\frac{3}{4}", "0.75", True),
    ("0.75", "\\frac{3}{4}", True),
    ("\\frac{3}{4}", "\\dfrac34", True),
    ("7/2", "3\\frac{1}{2}", True),
    ("1/3", "0.333333", True),
    ("1/3", "0.33", False),
    ("\\frac{1}{2}", "2", False),
    ("2", "\\frac{1}{2}", False),
    # radicals and pi
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("\\sqrt{2}", "2", False),
    ("2", "\\sqrt{2}", False),
    ("\\sqrt{2}", "1.414", False),
    ("2\\pi", "2π", True),
    ("2π", "2\\pi", True),
    ("2\\pi", "6.283185", True),
    ("2\\pi", "\\pi", False),
    # percentages, binomials, powers
    ("12\\%", "0.12", True),
    ("252", "\\binom{10}{5}", True),
    ("2^{997}", "2^{997}", True),
    ("2^{997}", "2^{996}", False),
    # intervals and sets
    ("[1, 3)", "[1,3)", True),
    ("[1, 3)", "[1, 3]", False),
    ("[1, 3]", "[1, 3)", False),
    ("(1, 3)", "[1, 3]", False),
    ("\\{1, 2\\}", "\\{2, 1\\}", True),
    ("\\{1, 2\\}", "1, 2", True),
    ("1, 2", "\\{1, 2\\}", True),
    ("\\{1, 2\\}", "\\{1, 3\\}", False),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}", False),
    ("\\pm 1", "1, -1", True),
    ("\\pm 1", "1", False),
    # equations and expressions
    ("5", "x = 5", True),
    ("x = 5", "5", True),
    ("a=3, b=-4", "b=-4, a=3", True),
    ("a=3, b=-4", "a=-4, b=3", False),
    ("n(n+1)/2", "\\frac{n^2+n}{2}", True),
    ("\\frac{n^2+n}{2}", "n(n+1)/2", True),
    ("2^(n-1)", "2^{n-1}", True),
    ("2^(n-1)", "2^{n}", False),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2-1", "(x-1)^2", False),
    # LaTeX vs plain text, text answers
    ("\\frac{1}{2}", "1/2", True),
    ("1/2", "\\tfrac{1}{2}", True),
    ("No", "no", True),
    ("No", "\\text{No}", True),
    ("No", "No.", True),
    ("No", "Yes", False),
    ("Yes", "yes", True),
    ("The limit does not exist", "the limit does not exist.", True),
    ("The limit does not exist", "0", False),
    ("Always greater than 20", "20", False),
    # final answers: a fraction where the reference is no integer, scientific notation
    ("1.5", "3/2", True),  # a fraction is final where the reference is not an integer
    ("200000", "2 \\times 10^{5}", True),  # scientific notation is a number
    ("-7", "-7", True),
    # an equation states the answer on its last side: that side is what must be a final number
    ("11", "6 + 5 = 11", True),
    ("11", "x = 11", True),
    ("11", "6 + 5 = 12", False),
]
# the question, not an answer: sympy evaluates these to the reference, yet they are no final answer
UNEVALUATED = [("156", "76 + 80"), ("-7", "91 - 98"), ("9", "7 - -2"), ("20", "4 \\times 5"), ("8", "2^3"),
               ("3", "12/4"), ("3", "\\frac{12}{4}"), ("156", "x = 76 + 80")]
EQUIVALENCE += [(reference, answer, False) for reference, answer in UNEVALUATED]


@pytest.mark.parametrize(("reference", "answer"), UNEVALUATED)
def test_an_expression_left_unevaluated_is_wrong_and_says_so(reference, answer):
    check = check_answer(reference, f"\\boxed{{{answer}}}")
    assert check.valid and not check.correct
    assert "unevaluated" in check.reason


def test_the_table_is_big_enough():
    assert len(EQUIVALENCE) >= 30
    assert sum(not expected for _, _, expected in EQUIVALENCE) >= 15


@pytest.mark.parametrize(("reference", "answer", "expected"), EQUIVALENCE)
def test_equivalence(reference, answer, expected):
    check = check_answer(reference, f"So the answer is \\boxed{{{answer}}}.")
    assert check.valid, check.reason
    assert check.correct is expected, check
    assert check.answer == answer
    assert check.reason == "correct" if expected else check.reason.startswith("wrong: expected")


def test_no_boxed_answer_is_invalid_with_a_reason():
    check = check_answer("14", "The answer is 14.")
    assert check == AnswerCheck(False, False, "no \\boxed{...} answer in the reply")


def test_empty_box_is_invalid():
    check = check_answer("14", "\\boxed{ }")
    assert not check.valid and not check.correct and "empty" in check.reason


def test_unparsable_answer_is_invalid_and_wrong():
    check = check_answer("14", "\\boxed{abc)(}")
    assert not check.valid and not check.correct
    assert "could not parse" in check.reason and check.answer == "abc)("


def test_overlong_answer_is_refused_unparsed():
    check = check_answer("14", "\\boxed{" + "1+" * 600 + "1}")
    assert not check.valid and "longer than 1000" in check.reason


@pytest.mark.parametrize("monster", ["9^{9^{9^{9}}}", "10^{10^{10}}", "(10^{10})!", "\\sum_{i=1}^{10^9} i", "(x+1)^{99999999}"])
def test_huge_answers_are_refused_before_evaluation(monster):
    check = check_answer("5", f"\\boxed{{{monster}}}")
    assert not check.valid and not check.correct and "too large" in check.reason


def test_large_but_reasonable_answers_are_evaluated():
    assert check_answer("2^{997}", "\\boxed{2^{997}}").correct
    assert check_answer("120", "\\boxed{5!}").correct


def test_the_last_boxed_answer_counts():
    reply = "First guess \\boxed{12}, but on reflection \\boxed{14}."
    assert check_answer("14", reply).correct
    assert not check_answer("12", reply).correct


def test_boxed_answer_inside_thinking_is_ignored():
    assert not check_answer("14", "<think>maybe \\boxed{14}</think> I am not sure.").valid
    reply = "<think>maybe \\boxed{12}</think> The total is \\boxed{14}."
    assert check_answer("14", reply).correct


def test_last_boxed_handles_nesting_fbox_and_unclosed_boxes():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed {7}") == "7"
    assert last_boxed("\\boxed{3} and then \\boxed{4") == "3"  # a box cut at the length limit is not an answer
    assert last_boxed("no box here") is None


def test_text_answers_are_recognised():
    assert is_text_answer("No") and is_text_answer("The limit does not exist") and is_text_answer("Always greater than 20")
    assert not any(is_text_answer(r) for r in ("2\\pi", "\\sqrt{2}", "x = 5", "\\infty", "n", "pi", "5 dollars"))


def test_the_argument_order_is_reference_first():
    # math-verify's verify is not symmetric: an interval prediction matches an inequality reference, and
    # roots match an equation, but not the other way round. Swapping the arguments flips these verdicts.
    assert check_answer("1 < x < 2", "\\boxed{(1, 2)}").correct
    assert not check_answer("(1, 2)", "\\boxed{1 < x < 2}").correct
    assert check_answer("x^2 = 4", "\\boxed{\\pm 2}").correct
    assert not check_answer("\\pm 2", "\\boxed{x^2 = 4}").correct
    assert check_answer("3/4", "\\boxed{0.5}").reason == "wrong: expected 3/4, got 0.5"


def test_verification_works_from_a_worker_thread():
    results: list[AnswerCheck] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(check_answer("\\frac{3}{4}", "\\boxed{0.75}"))
            results.append(check_answer("[1, 3)", "\\boxed{[1, 3]}"))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not errors, errors
    assert [r.correct for r in results] == [True, False]


def test_checking_leaves_the_alarm_signal_alone():
    before = signal.getsignal(signal.SIGALRM)
    check_answer("1/2", "\\boxed{0.5}")
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.alarm(0) == 0  # no alarm left pending
