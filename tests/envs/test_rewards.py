"""The reward modes are pure functions: tested on numbers, without an environment."""

import pytest

from mappa_env.envs.rewards import REWARD_MODES, final_reward, immediate_reward, scaled

SETTINGS = {"reward_scale": 0.1, "outcome_weight": 0.25}


def test_the_vocabulary_is_the_three_documented_modes():
    assert REWARD_MODES == ("process", "outcome", "mixed")


def test_scaling_keeps_an_unscored_action_unscored():
    assert scaled(7.0, 0.1) == pytest.approx(0.7) and scaled(None, 0.1) is None


@pytest.mark.parametrize(("mode", "expected"), [("process", 0.8), ("outcome", 0.0), ("mixed", 0.6)])
def test_what_is_known_right_after_the_action(mode, expected):
    assert immediate_reward(mode, 8.0, **SETTINGS) == pytest.approx(expected)
    assert immediate_reward(mode, None, **SETTINGS) == 0.0  # nothing known: nothing delivered yet


@pytest.mark.parametrize(("mode", "expected"), [("process", 0.8), ("outcome", 0.4), ("mixed", 0.75 * 0.8 + 0.25 * 0.4)])
def test_the_final_reward_of_each_mode(mode, expected):
    assert final_reward(mode, 8.0, 4.0, **SETTINGS) == pytest.approx(expected)


def test_mixed_and_process_never_invent_a_reward_for_an_unscored_action():
    assert final_reward("process", None, 4.0, **SETTINGS) is None
    assert final_reward("mixed", None, 4.0, **SETTINGS) is None
    assert final_reward("outcome", None, 4.0, **SETTINGS) == pytest.approx(0.4)  # the outcome does not need the coach
