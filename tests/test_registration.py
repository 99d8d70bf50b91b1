import pettingzoo
import pytest
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

import mappa_env
from mappa_env.envs.dsbench import DSBenchEnv
from mappa_env.error import RegistrationError, UnregisteredEnv


def test_make_returns_order_enforced_dsbench():
    env = mappa_env.make("dsbench-v0")
    assert isinstance(env, OrderEnforcingWrapper)
    assert isinstance(env.unwrapped, DSBenchEnv)
    assert env.unwrapped.possible_agents == ["data_engineer", "modeler", "analyst"]


def test_kwargs_override_registered_defaults():
    env = mappa_env.make("dsbench-v0", split="heldout", max_actions_per_agent=2, reward_mode="outcome")
    raw = env.unwrapped
    assert (raw.split, raw.max_actions_per_agent, raw.reward_mode) == ("heldout", 2, "outcome")
    assert all(t.split == "heldout" for t in raw.tasks)


def test_unknown_id_names_the_closest_ids():
    with pytest.raises(UnregisteredEnv, match="dsbench-v0"):
        mappa_env.make("dsbench-v1")
    with pytest.raises(KeyError):  # UnregisteredEnv is also a KeyError, as users of registries expect
        mappa_env.make("nothing-like-it-v0")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "test"}, "split must be one of"),
        ({"reward_mode": "dense"}, "reward_mode must be one of"),
        ({"max_actions_per_agent": 0}, "max_actions_per_agent"),
        ({"exec_timeout_s": -1}, "exec_timeout_s"),
        ({"coach": "oracle"}, "unknown coach"),
        ({"sandbox": "vm"}, "sandbox"),
        ({"max_action_per_agent": 3}, "Did you mean 'max_actions_per_agent'"),
        ({"outcome_weight": 2}, "outcome_weight"),
    ],
)
def test_bad_values_raise_value_error_saying_how_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        env = mappa_env.make("dsbench-v0", **kwargs)
        env.reset(seed=0)


def test_registered_in_pettingzoo_registry_too():
    env = pettingzoo.make("aec", "mappa/dsbench-v0", split="heldout")
    assert isinstance(env.unwrapped, DSBenchEnv)
    assert env.unwrapped.split == "heldout"


def test_register_rejects_malformed_and_duplicate_ids():
    with pytest.raises(RegistrationError, match="name-vN"):
        mappa_env.register("NoVersion", "mappa_env.envs.dsbench:env")
    with pytest.raises(RegistrationError, match="already registered"):
        mappa_env.register("dsbench-v0", "mappa_env.envs.dsbench:env")
    assert "dsbench-v0" in mappa_env.registry
