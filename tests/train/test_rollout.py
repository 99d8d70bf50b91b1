"""The rollout's glue: every reward reaches the sample of the action that earned it, and nothing is invented.

Played on ``LedgerEnv`` (ledger_env.py), whose agents act several times each and whose per-action rewards
are distinct and known from the action's text, with some actions left unscored (``None``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

from ledger_env import AGENTS, PLANS, UNSCORED, LedgerEnv, LedgerTeam, amount, expected_reward  # noqa: E402

from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402

# ledger/b takes one action more than ledger/a: episodes 1 and 2 finish before episode 0
SPECS = [EpisodeSpec(task_id, seed=i) for i, task_id in enumerate(["ledger/b", "ledger/a", "ledger/a", "ledger/b", "ledger/a"])]


@pytest.fixture(scope="module")
def played():
    team = LedgerTeam()
    envs = [LedgerEnv() for _ in range(3)]  # three episodes in flight, five to play
    episodes, times = collect(team, envs, SPECS, temperature=1.0, seed=0)
    return team, episodes, times


def test_episodes_come_back_in_order_each_with_its_own_task(played):
    _, episodes, _ = played
    assert [(e.episode, e.task_id, e.seed) for e in episodes] == [(i, s.task_id, s.seed) for i, s in enumerate(SPECS)]
    for episode in episodes:
        assert {s.task_id for s in episode.samples} == {episode.task_id}
        assert {s.episode for s in episode.samples} == {episode.episode}
        assert episode.outcome["task_id"] == episode.task_id and episode.outcome["valid"] is True


def test_each_agent_acts_as_planned_with_its_action_index(played):
    _, episodes, times = played
    for episode in episodes:
        plan = PLANS[episode.task_id]
        assert [s.agent for s in episode.samples] == [a for a in AGENTS for _ in range(plan[a])]  # the turn order
        for agent in AGENTS:
            assert [s.action_index for s in episode.samples if s.agent == agent] == list(range(plan[agent]))
    assert times.actions == sum(sum(PLANS[s.task_id].values()) for s in SPECS)


def test_every_reward_lands_on_the_action_that_earned_it(played):
    _, episodes, _ = played
    for episode in episodes:
        for sample in episode.samples:
            key = (episode.task_id, sample.agent, sample.action_index)
            if key in UNSCORED:
                continue
            assert sample.reward == pytest.approx(amount(*key)), key
            assert sample.reward == pytest.approx(expected_reward(sample.generation.text))
            assert sample.step["stdout"] == sample.generation.text  # and its step record too
            assert sample.step["action_index"] == sample.action_index


def test_an_unscored_action_stays_unscored(played):
    _, episodes, _ = played
    unscored = [(e.task_id, s.agent, s.action_index) for e in episodes for s in e.samples if s.reward is None]
    per_episode = {task_id: sum(1 for t, _, _ in UNSCORED if t == task_id) for task_id in PLANS}
    assert len(unscored) == sum(per_episode[s.task_id] for s in SPECS)
    assert set(unscored) == UNSCORED
    for episode in episodes:
        for sample in episode.samples:
            if sample.reward is None:
                assert sample.step["verdict"]["score"] is None and "unscored" in sample.generation.text


def test_generation_is_batched_across_the_episodes_in_flight(played):
    team, _, times = played
    assert times.generate_calls == len(team.calls) and sum(team.calls) == times.actions
    assert max(team.calls) > 1  # at least one call served several episodes at once


def test_an_environment_that_drops_a_reward_is_refused():
    class Forgetful(LedgerEnv):
        def step(self, action):
            ending = action is not None and "last" in action and self.agent_selection == "closer"
            super().step(action)
            if ending:
                self.infos["builder"]["step_rewards"] = self.infos["builder"]["step_rewards"][1:]

    with pytest.raises(RuntimeError, match="must hold one entry per action"):
        collect(LedgerTeam(), [Forgetful()], [EpisodeSpec("ledger/a", seed=0)], temperature=1.0)


def test_each_generation_call_gets_its_own_seed_derived_from_the_rollouts():
    from mappa_train.seeding import GENERATE_CALL, derive

    class SeedRecordingTeam(LedgerTeam):
        def __init__(self):
            super().__init__()
            self.seeds = []

        def generate(self, requests, *, temperature, top_p=1.0, seed=None):
            self.seeds.append(seed)
            return super().generate(requests, temperature=temperature, top_p=top_p, seed=seed)

    seeds = {}
    for rollout_seed in (3, 4):
        team = SeedRecordingTeam()
        collect(team, [LedgerEnv()], SPECS[:2], temperature=1.0, seed=rollout_seed)
        seeds[rollout_seed] = team.seeds
        assert team.seeds == [derive(rollout_seed, GENERATE_CALL, n) for n in range(len(team.seeds))]
    # one episode in flight: one call per action
    assert len(seeds[3]) == sum(sum(PLANS[s.task_id].values()) for s in SPECS[:2])
    assert not set(seeds[3]) & set(seeds[4])  # another rollout seed, other streams (seed * k + calls could meet)


def test_a_reply_prefix_the_environment_offers_is_prefilled_and_sent_with_the_reply():
    """mathchat-v0's verifier opens with ``The answer is \\boxed{``: the prompt ends with it, the model writes the rest."""
    import mappa_env
    from mappa_train.policy import Generation

    env = mappa_env.make("mathchat-v0", split="heldout", coach="receipts")
    task = env.unwrapped.tasks[0]
    prefix = "The answer is \\boxed{"

    class PrefillingTeam:
        """Encodes a prompt as its last message's characters plus the prefix's, and completes the box."""

        def encode_prompt(self, messages, reply_prefix="", *, agent=None):
            return [ord(c) for c in messages[-1]["content"] + reply_prefix]

        def generate(self, requests, *, temperature, top_p=1.0, seed=None):
            out = []
            for agent, prompt_ids in requests:
                text = f"{task.answer}}}." if agent == "verifier" else "I checked it."
                out.append(Generation(agent=agent, prompt_ids=list(prompt_ids), completion_ids=[1], sampling_logprobs=[-1.0],
                                      truncated=False, text=text, from_policy=True))
            return out

    try:
        [episode], _ = collect(PrefillingTeam(), [env], [EpisodeSpec(task.id, seed=0)], temperature=1.0)
    finally:
        env.close()
    verifier = next(s for s in episode.samples if s.agent == "verifier")
    assert "".join(map(chr, verifier.generation.prompt_ids)).endswith("Give the final answer in \\boxed{}." + prefix)
    assert verifier.step["action"] == f"{prefix}{task.answer}}}."  # the environment took prefix and completion
    assert episode.outcome["correct"] is True
    others = [s for s in episode.samples if s.agent != "verifier"]
    assert others and all(s.step["action"] == "I checked it." for s in others)  # no prefix where none is offered
    assert all(not "".join(map(chr, s.generation.prompt_ids)).endswith(prefix) for s in others)


def test_the_environment_side_of_an_episode_answers_in_plain_data_that_crosses_processes():
    """An EnvSlot's turns survive pickling unchanged (a worker process can hold the environment), and a slot
    reused for further episodes reports each episode's own actions only."""
    import pickle

    import mappa_env

    from mappa_train.rollout import EnvSlot

    slot = EnvSlot(mappa_env.make("mathchat-v0", split="heldout"))
    first, second = (task.id for task in slot.env.unwrapped.tasks[:2])
    for task_id in (first, second, first):
        turns = [slot.start(EpisodeSpec(task_id, seed=0))]
        while not turns[-1].done:
            agent, _, prefix = turns[-1].request
            turns.append(slot.step(prefix + ("```python\nprint(7)\n```" if agent == "code_executor" else r"\boxed{7}")))
        assert [pickle.loads(pickle.dumps(turn)) for turn in turns] == turns
        acted = [t.request[0] for t in turns[:-1]]
        assert acted[0] == "problem_solver" and acted[-1] == "verifier" and "code_executor" in acted
        assert {t.task_id for t in turns} == {task_id} and all(t.outcome is None for t in turns[:-1])
        last = turns[-1]
        assert last.outcome["task_id"] == task_id and last.outcome["answer"] == "7"
        # one reward and one step record per action of each agent: this episode's only
        assert {agent: len(info["step_rewards"]) for agent, info in last.final.items()} == \
            {agent: acted.count(agent) for agent in set(acted)}
        assert last.final["code_executor"]["steps"][0]["stdout"].strip() == "7"
