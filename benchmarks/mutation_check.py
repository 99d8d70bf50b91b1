"""Mutation check of the trainer and the grader: plant one plausible bug at a time and see whether a test fails.

Each mutant below is a small, realistic mistake (an off-by-one, a flipped comparison, a forgotten
restore) in ``mappa_train/`` or in what grades and rewards an episode (``mappa_env`` metrics, grader,
outcome reward, the receipts coach's caps, the engine's reward channel), with the tests that should
notice it. The check copies the working tree to a temporary directory, applies one mutant there,
runs its tests (``pytest -x``) against that copy, and reports *killed* (a test failed) or
*survived* (every test passed: the bug would ship). A mutant whose original text is no longer in
the file is reported *stale*: update the catalogue when the code moves.

Run it before resolving an issue that touches these modules (it is too slow for CI, about 16 minutes
on 2 cores; the tests it motivates do run in CI)::

    python benchmarks/mutation_check.py                 # every mutant
    python benchmarks/mutation_check.py --only R1 L3    # some of them
    python benchmarks/mutation_check.py --list          # the catalogue
    python benchmarks/mutation_check.py --markdown /tmp/mutants.md  # and the table as a file

Results and the surviving mutants, each killed by a new test or argued equivalent, are in
docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("mappa_env", "mappa_train", "tests", "pyproject.toml", "setup.cfg")

ROLLOUT = ["tests/train/test_rollout.py"]
LEARNER = ["tests/train/test_learner.py"]
POLICY = ["tests/train/test_policy.py", "tests/train/test_learner.py"]
ALGORITHMS = ["tests/train/test_algorithms.py"]
CHECKPOINT = ["tests/train/test_checkpoint.py"]
RESUME = ["tests/train/test_checkpoint.py", "tests/train/test_cli.py::test_resume_after_sigkill_continues_exactly_the_run_that_was_killed"]
TRAINER = ["tests/train/test_trainer_glue.py", "tests/train/test_cli.py", "tests/train/test_learning.py"]
SAMPLER = ["tests/train/test_sampler.py"]
CONFIG = ["tests/train/test_config.py", "tests/train/test_cli.py::test_bad_settings_are_refused_before_any_work_with_how_to_fix"]
METRICS = ["tests/test_metrics.py", "tests/test_grader.py"]
GRADER = ["tests/test_grader.py"]
RECEIPTS = ["tests/coach/test_receipts_coach.py"]
FAULTS = ["tests/coach/test_receipts_faults.py"]
SWEEP = ["tests/coach/test_bias_sweep.py"]
CHECKS = ["tests/envs/test_output_checks.py"]
MATH_ENV = ["tests/envs/test_mathchat_env.py::test_the_solver_and_verifier_code_is_never_run",
            "tests/envs/test_mathchat_env.py::test_the_verifier_sees_the_executors_last_message_and_output",
            "tests/envs/test_mathchat_env.py::test_the_rule_coach_scores_the_sound_team_high"]
MATH_ANSWERS = ["tests/envs/test_math_answers.py"]
SAMPLING = ["tests/test_sampling_metrics.py"]
RECOACH_HINDSIGHT = ["tests/coach/test_recoach_and_bias.py::test_a_hindsight_coach_recoaches_with_each_episodes_outcome_and_trajectory"]
FINAL_ANSWERS = ["tests/envs/test_math_answers.py"]
DISTRIBUTED = ["tests/train/test_distributed.py"]
REFERENCE_ROWS = ["tests/train/test_learner.py::test_without_a_kl_penalty_the_reference_is_run_on_the_first_micro_batch_only"]
EVAL_EPISODES = ["tests/train/test_cli.py::test_the_tiny_math_config_trains_the_math_team_with_the_same_trainer"]
UNCHANGED = ["tests/train/test_report.py::test_a_run_whose_held_out_results_did_not_move_says_so_and_where_to_see_a_team_improve"]
PREFILL = ["tests/policies/test_hf_policy.py", "tests/train/test_rollout.py::test_a_reply_prefix_the_environment_offers_is_prefilled_and_sent_with_the_reply"]
DSBENCH_REWARD = ["tests/envs/test_dsbench_env.py::test_reward_modes_deliver_one_reward_per_action",
                  "tests/envs/test_dsbench_env.py::test_the_outcome_reward_follows_the_documented_scale"]
PARSING = ["tests/coach/test_openai_coach.py::test_score_lines_are_read_strictly_where_the_rubric_puts_them",
           "tests/coach/test_openai_coach.py::test_a_reply_cut_before_its_score_line_is_unscored_as_truncated_and_not_reasked"]
WATCH = ["tests/train/test_coach_watch.py::test_the_unscored_watch_warns_counts_and_stops_after_steps_with_nothing_to_train_on",
         "tests/train/test_coach_watch.py::test_the_bias_watch_runs_over_the_whole_run_and_survives_a_checkpoint"]
DOCKER_SPEC = ["tests/sandbox/test_docker_spec.py"]
REWARDS = ["tests/envs/test_pipeline_engine.py", "tests/envs/test_rewards.py",
           "tests/envs/test_dsbench_env.py::test_reward_modes_deliver_one_reward_per_action"]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``old`` (which must occur exactly once in ``path``) becomes ``new``."""

    id: str
    path: str
    old: str
    new: str
    tests: list[str]
    what: str  # what a user would get


MUTANTS = [
    # ------------------------------------------------------------------ mappa_train/rollout.py
    Mutant("R1", "mappa_train/rollout.py", "sample.reward = None if reward is None else float(reward)",
           "sample.reward = 0.0 if reward is None else float(reward)", ROLLOUT,
           "an unscored action trains on an invented reward of 0"),
    Mutant("R2", "mappa_train/rollout.py", "zip(mine, rewards, steps)", "zip(mine, rewards[1:] + rewards[:1], steps)",
           ROLLOUT, "every reward on the wrong action"),
    Mutant("R3", "mappa_train/rollout.py", "action_index=sum(s.agent == agent for s in self.samples)", "action_index=0",
           ROLLOUT, "every sample claims to be its agent's first action (groups, logs)"),
    Mutant("R4", "mappa_train/rollout.py", "zip(mine, rewards, steps)", "zip(mine, rewards, steps[1:] + steps[:1])",
           ROLLOUT, "step records (verdicts, statuses) attached to the wrong action"),
    Mutant("R5", "mappa_train/rollout.py", "return [finished[i] for i in range(len(episodes))], times",
           "return list(finished.values()), times", ROLLOUT, "episodes returned in finishing order, not spec order"),
    Mutant("R6", "mappa_train/rollout.py", "mine = [s for s in self.samples if s.agent == agent]",
           "mine = list(self.samples)", ROLLOUT, "one agent's rewards matched against every agent's actions"),
    # ------------------------------------------------------------------ mappa_train/learner.py
    Mutant("L1", "mappa_train/learner.py", "        mask[row, : len(completion)] = 1.0", "        mask[row, :] = 1.0",
           LEARNER, "padding counted as tokens: advantages whitened and losses averaged over padding"),
    Mutant("L2", "mappa_train/learner.py", "group_ids = [(s.task_id, s.agent, s.action_index) for s in usable]",
           "group_ids = [(s.agent, s.action_index) for s in usable]", LEARNER,
           "GRPO/RLOO baselines mix different tasks"),
    Mutant("L3", "mappa_train/learner.py",
           "recompute = config.recompute_old_logprobs or config.tis_cap or not all(s.generation.from_policy for s in usable)",
           "recompute = config.recompute_old_logprobs or config.tis_cap", LEARNER,
           "tempered sampling log-probs taken for the policy's: wrong importance ratios"),
    Mutant("L4", "mappa_train/learner.py", "[s.reward * config.reward_scale for s in usable]",
           "[s.reward for s in usable]", LEARNER, "algorithm.reward_scale does nothing"),
    Mutant("L5", "mappa_train/learner.py",
           "share = micro_mask.sum() / tokens_in_minibatch.to(micro_mask.device)",
           "share = torch.tensor(len(rows) / len(minibatch))", LEARNER,
           "loss weighted per micro-batch instead of per token"),
    Mutant("L6", "mappa_train/learner.py", "usable = [s for s in usable if not s.generation.truncated]",
           "usable = list(usable)", LEARNER, "rollout.mask_truncated does nothing"),
    Mutant("L7", "mappa_train/learner.py", "            optimizer.zero_grad(set_to_none=True)\n", "", LEARNER,
           "gradients of earlier optimiser steps leak into later ones"),
    Mutant("L8", "mappa_train/learner.py", "            scheduler.step()\n", "", LEARNER,
           "the learning-rate schedule never moves"),
    Mutant("L9", "mappa_train/learner.py", "        mine = [s for s in samples if team.group_of(s.agent) == group]",
           "        mine = list(samples)", LEARNER, "every agent trained on every agent's actions"),
    Mutant("L10", "mappa_train/learner.py", "stats = GroupStats(unscored=sum(s.reward is None for s in samples), stale_masked",
           "stats = GroupStats(unscored=0, stale_masked", LEARNER, "unscored actions are not counted"),
    Mutant("L12", "mappa_train/learner.py", "        with team.reference(group) as reference:", "        with team.acting(group) as reference:",
           LEARNER, "the reference is the acting policy: the KL penalty and kl_to_reference are always 0"),
    Mutant("L11", "mappa_train/learner.py", "minibatches = [order[i:: config.updates_per_step] for i in range(config.updates_per_step)]",
           "minibatches = [order[:: config.updates_per_step] for i in range(config.updates_per_step)]", LEARNER,
           "with several updates per step, the same mini-batch every time"),
    Mutant("L13", "mappa_train/learner.py", "    stale = [s for s in samples if s.generation.policy_version != expected]",
           "    stale = []", LEARNER, "a sample of replaced weights (a stale adapter) trains as if it were fresh"),
    Mutant("L14", "mappa_train/learner.py", "    team.versions[group] += 1  # new weights", "    pass  # new weights", LEARNER,
           "an update leaves the weights version as it was: the vllm backend keeps serving the old adapter unnoticed"),
    Mutant("L15", "mappa_train/learner.py", "weights=None if weights is None else weights[rows, :width].to(logprobs.device))",
           "weights=None)", LEARNER, "algorithm.tis_cap logs its weights but the loss never sees them"),
    Mutant("L16", "mappa_train/algorithms.py", "torch.exp(learner_logprobs - sampler_logprobs).clamp(max=cap)",
           "torch.exp(learner_logprobs - sampler_logprobs)", LEARNER, "the importance weights are not truncated"),
    Mutant("L17", "mappa_train/learner.py", "recompute = config.recompute_old_logprobs or config.tis_cap or",
           "recompute = config.recompute_old_logprobs or", LEARNER,
           "with algorithm.tis_cap the sampler's log-probs are taken for pi_old: every weight is 1"),
    Mutant("R7", "mappa_train/rollout.py", "team.encode_prompt(ep.request[1], ep.request[2], agent=ep.request[0])",
           "team.encode_prompt(ep.request[1], ep.request[2])", ["tests/train/test_heterogeneous.py"],
           "a heterogeneous team's prompts are not tokenised by the acting agent's own tokenizer"),
    # ------------------------------------------------------------------ mappa_train/distributed.py (and its callers)
    Mutant("D1", "mappa_train/learner.py", "            processes.sum_gradients(parameters)", "            pass", DISTRIBUTED,
           "each process steps on its own share's gradient: the processes drift apart"),
    Mutant("D2", "mappa_train/distributed.py", "        self.sum(flat)\n", "        self.sum(flat).div_(self.world)\n",
           DISTRIBUTED, "gradients averaged over processes while each share's loss is already a part of the whole token mean"),
    Mutant("D3", "mappa_train/learner.py", "    ref = processes.sum(computed_ref)", "    ref = computed_ref", DISTRIBUTED,
           "the reference log-probs of the other processes' rows are left at 0"),
    Mutant("D4", "mappa_train/learner.py", "old = processes.sum(computed_old) if recorded", "old = computed_old if recorded",
           DISTRIBUTED,
           "recomputed old log-probs of the other processes' rows are left at 0"),
    Mutant("D5", "mappa_train/learner.py", "tokens_in_minibatch = mask[minibatch].sum()",
           "tokens_in_minibatch = mask[processes.share(minibatch)].sum()", DISTRIBUTED,
           "each share's loss is a mean over its own tokens, not a part of the mini-batch's token mean"),
    Mutant("D6", "mappa_train/distributed.py", "episode.episode = self.rank + episode.episode * self.world",
           "episode.episode = episode.episode", DISTRIBUTED, "gathered episodes keep their share's numbers: two episodes 0"),
    Mutant("D7", "mappa_train/distributed.py", "        return seeding.derive(seed, seeding.PROCESS, self.rank)",
           "        return seed", DISTRIBUTED, "every process samples with the same noise"),
    Mutant("D8", "mappa_train/trainer.py", "purge_step=purge) if processes.is_main else NoWriter()", "purge_step=purge)",
           DISTRIBUTED, "every process writes its own TensorBoard files into the run"),
    # ------------------------------------------------------------------ mappa_train/policy.py
    Mutant("P1", "mappa_train/policy.py", "from_policy=temperature == 1.0 and top_p >= 1.0", "from_policy=True", POLICY,
           "tempered samples marked as the policy's own"),
    Mutant("P2", "mappa_train/policy.py", "            mask[row, : len(completion)] = 1.0", "            mask[row, :] = 1.0",
           POLICY, "the loss covers padding tokens"),
    Mutant("P3", "mappa_train/policy.py", "length, ended = position + 1, True", "length, ended = position, True", POLICY,
           "the end-of-turn token is never trained"),
    Mutant("P4", "mappa_train/policy.py", "ids = ids[:head] + ids[len(ids) - (limit - head):]", "ids = ids[:limit]", POLICY,
           "long prompts lose their most recent turns"),
    Mutant("P5", "mappa_train/policy.py", "            marker = f\".{group}.\"", "            marker = \".\"", POLICY,
           "one agent's optimiser updates every adapter"),
    # ------------------------------------------------------------------ mappa_train/algorithms.py
    Mutant("A1", "mappa_train/algorithms.py", "running = masked[:, t] + gamma * running", "running = masked[:, t]",
           ALGORITHMS, "no return-to-go: the score reaches only the last token"),
    Mutant("A2", "mappa_train/algorithms.py", "advantages[members] = (group - group.mean()) / (group.std() + eps)",
           "advantages[members] = (group - group.mean())", ALGORITHMS, "GRPO without the std normalisation"),
    Mutant("A3", "mappa_train/algorithms.py", "advantages[members] = group - (group.sum() - group) / (n - 1)",
           "advantages[members] = group - group.sum() / n", ALGORITHMS, "RLOO's baseline includes the sample itself"),
    Mutant("A4", "mappa_train/algorithms.py", "clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages",
           "clipped = ratio * advantages", ALGORITHMS, "PPO without clipping"),
    # ------------------------------------------------------------------ mappa_train/checkpoint.py and resume
    Mutant("C1", "mappa_train/checkpoint.py", "    restore_random_states(state[\"random\"])\n", "", CHECKPOINT,
           "a resumed run draws other random numbers"),
    Mutant("C2", "mappa_train/checkpoint.py", "state = torch.load(directory / f\"{PREFIX}{steps[-1]}\"",
           "state = torch.load(directory / f\"{PREFIX}{steps[0]}\"", CHECKPOINT, "resume from the oldest checkpoint kept"),
    Mutant("C3", "mappa_train/checkpoint.py", "if entry.name.startswith(PREFIX) and (entry / \"state.pt\").is_file():",
           "if entry.name.startswith(PREFIX) or entry.name.startswith(\".tmp\"):", CHECKPOINT,
           "a half-written checkpoint is taken for a complete one"),
    Mutant("T1", "mappa_train/trainer.py", "                    load_group_state_dict(team, group, tensors)\n",
           "                    pass\n", RESUME, "a resumed run restarts from the initial parameters"),
    Mutant("T2", "mappa_train/trainer.py", "                optimisation.load_state_dict(state[\"optimisation\"])\n", "",
           RESUME, "a resumed run restarts its optimiser moments and schedule"),
    Mutant("T3", "mappa_train/trainer.py", "                sampler.load_state_dict(state[\"sampler\"])\n", "", RESUME,
           "tasks repeated or skipped after a resume"),
    Mutant("T4", "mappa_train/trainer.py", "start_step, evaluations = state[\"step\"], state.get(\"evaluations\", {})",
           "start_step, evaluations = state[\"step\"], {}", RESUME, "the report of a resumed run loses its 'before' row"),
    Mutant("T5", "mappa_train/trainer.py",
           "parts = [snapshot.get(name, 0) for snapshot in snapshots] + [carried.get(name, 0)]",
           "parts = [snapshot.get(name, 0) for snapshot in snapshots]", CHECKPOINT,
           "the coach's running totals restart at 0 after a resume"),
    Mutant("T8", "mappa_train/trainer.py", "purge = (start_step + 1 if start_step else 0) if config.run.resume else None",
           "purge = None", RESUME, "a resumed run logs the killed run's last steps twice"),
    Mutant("T9", "mappa_train/trainer.py", "if last or (config.run.checkpoint_every and", "if (config.run.checkpoint_every and",
           TRAINER, "run.checkpoint_every 0 ('only at the end') leaves no checkpoint"),
    # ------------------------------------------------------------------ mappa_train/trainer.py, sampler.py, config.py
    Mutant("T6", "mappa_train/trainer.py", "temperature=config.model.eval_temperature, top_p=1.0",
           "temperature=config.model.temperature, top_p=1.0", TRAINER, "evaluation samples at the training temperature"),
    # the per-step figures moved from the trainer's logging into report.step_figures (screen line and scalars)
    Mutant("T7", "mappa_train/report.py", "unscored=len(mine) - len(rewards), reward=_mean(rewards),",
           "unscored=len(mine) - len(rewards), reward=_mean([s.reward or 0.0 for s in mine]),",
           ["tests/train/test_report.py", "tests/train/test_trainer_glue.py"],
           "the reward curve averages unscored actions in as 0"),
    Mutant("S1", "mappa_train/sampler.py", "\"draws\": self.draws}", "\"draws\": 0}", SAMPLER,
           "a restored sampler rotates its rounding differently"),
    Mutant("S2", "mappa_train/sampler.py", "random.Random(derive(self.seed, TASK_ORDER, kind, self.passes[kind])).shuffle(order)",
           "random.Random(derive(self.seed, TASK_ORDER, kind)).shuffle(order)", SAMPLER,
           "every pass visits the tasks in the same order"),
    Mutant("G1", "mappa_train/config.py", "need(a.estimator == \"reinforce_pp\" or r.samples_per_task >= 2,",
           "need(True,", CONFIG, "GRPO with one sample per task is accepted (advantages all 0)"),
    # ------------------------------------------------------------------ the grader and the rewards
    Mutant("D1", "mappa_env/envs/dsbench/__init__.py", "return max(0.0, 10.0 * (1.0 - value / 100.0))",
           "return min(10.0, 10.0 * value / 100.0)", DSBENCH_REWARD, "the outcome reward rises with the RMSE"),
    Mutant("D2", "mappa_env/envs/dsbench/__init__.py", "return float(min(10.0, max(0.0, 10.0 * value)))",
           "return float(min(10.0, max(0.0, value)))", DSBENCH_REWARD, "classification outcome rewards on a 0-1 scale"),
    Mutant("M1", "mappa_env/metrics.py", "y_pred, positive_label = scores > 0.5, True",
           "y_pred, positive_label = scores >= 0.5, True", METRICS, "a probability of exactly 0.5 counted as positive"),
    Mutant("M2", "mappa_env/metrics.py", "    \"mae\": False,\n}", "    \"mae\": True,\n}", METRICS,
           "MAE tasks' RPG rewards larger errors"),
    Mutant("M3", "mappa_env/metrics.py", "    \"rmse\": False,\n", "    \"rmse\": True,\n", METRICS,
           "RMSE tasks' RPG rewards larger errors"),
    Mutant("M4", "mappa_env/metrics.py", "return max(0.0, (score - baseline) / (perfect - baseline))",
           "return (score - baseline) / (perfect - baseline)", METRICS, "RPG goes negative below the baseline"),
    Mutant("M5", "mappa_env/metrics.py", "return float(np.sqrt(mean_squared_error(truth, predicted)))",
           "return float(np.mean(np.abs(truth - predicted)))", METRICS, "RMSE computed as MAE"),
    Mutant("M6", "mappa_env/metrics.py", "return 100.0 * float(rmse_value) / float(target_range)",
           "return float(rmse_value) / float(target_range)", METRICS, "RMSE as a share of the range, labelled %"),
    Mutant("M7", "mappa_env/metrics.py", "rpg_fair = [_metric(o, \"rpg\") if o.get(\"valid\") else 0.0 for o in outcomes]",
           "rpg_fair = [_metric(o, \"rpg\") for o in outcomes if o.get(\"valid\")]", METRICS,
           "failed runs left out of the fair RPG instead of counting 0"),
    Mutant("M8", "mappa_env/metrics.py", "\"accuracy_fair\": fair(classification, \"accuracy\", failed=0.0),",
           "\"accuracy_fair\": plain(classification, \"accuracy\"),", METRICS, "Accuracy (Fair) ignores failed runs"),
    Mutant("M9", "mappa_env/metrics.py", "average=\"macro\", zero_division=0", "average=\"weighted\", zero_division=0",
           METRICS, "macro F1 weighted by class frequency"),
    Mutant("M10", "mappa_env/metrics.py", "pos_label=True, average=\"binary\"", "pos_label=False, average=\"binary\"",
           METRICS, "binary F1 of the negative class"),
    Mutant("K1", "mappa_env/envs/dsbench/grader.py", "return [by_id[i] for i in reference.ids]", "return values", GRADER,
           "graded by row position instead of id (the published code's bug)"),
    Mutant("K2", "mappa_env/envs/dsbench/grader.py", "if not np.isfinite(value):", "if np.isnan(value):", GRADER,
           "an infinite regression prediction is graded"),
    Mutant("K3", "mappa_env/envs/dsbench/grader.py", "duplicated = [i for i, n in counts.items() if n > 1]", "duplicated = []",
           GRADER, "a submission with duplicate ids is graded"),
    Mutant("K4", "mappa_env/envs/dsbench/grader.py", "    if bad:  # an empty cell is a missing prediction, not a label",
           "    if False:", GRADER, "an empty label cell is graded as a (wrong) label"),
    Mutant("K5", "mappa_env/envs/dsbench/grader.py", "task.metric: metrics.get(task.metric, primary), ", "", GRADER,
           "a ROC-AUC task answered with labels shows no roc_auc (primary metric unnamed)"),
    Mutant("Q1", "mappa_env/coach/receipts.py", "        if rpg >= limit:", "        if rpg > limit:", RECEIPTS,
           "a result exactly on an RPG threshold gets the lower cap"),
    Mutant("Q2", "mappa_env/coach/receipts.py", "    if rpg > 0:\n        return 4.0, why", "    if rpg >= 0:\n        return 4.0, why",
           RECEIPTS, "a constant predictor (RPG 0) earns 4, above the majority-class cap"),
    Mutant("Q3", "mappa_env/coach/receipts.py", "        cap, why = quality_cap(result.metrics)",
           "        cap, why = quality_cap({**result.metrics, \"rpg\": result.metrics[\"rpg\"] + (0.25 if req.task_type == \"regression\" else 0.0)})",
           [*RECEIPTS, *SWEEP], "the caps favour regression again, by a quarter of the RPG scale"),
    Mutant("Q4", "mappa_env/coach/receipts.py",
           "    findings = [f for f in req.standing_findings() if f.file not in own and req.owner_of(f.file) != req.role]",
           "    findings = [f for f in req.standing_findings() if f.file in req.role_info.consumes and req.owner_of(f.file) != req.role]",
           FAULTS, "a leak in X_train.pkl is blamed on the analyst whose submission it spoilt"),
    Mutant("J1", "mappa_env/envs/pipeline.py",
           "        record = replace(record, result=self._grade_action(record), findings=self._check_outputs(record))",
           "        record = replace(record, findings=self._check_outputs(record))", FAULTS,
           "the submission's quality reaches only the closing message again"),
    Mutant("J2", "mappa_env/envs/pipeline.py",
           "        record = replace(record, result=self._grade_action(record), findings=self._check_outputs(record))",
           "        record = replace(record, result=self._grade_action(record))", FAULTS,
           "faults that pass silently downstream (ids, leaks, id features) are never found"),
    Mutant("J3", "mappa_env/coach/receipts.py", "    if not _EXCEPT_RE.search(step.code):\n        return \"\"",
           "    if True:\n        return \"\"", FAULTS, "an exception caught and printed counts as a clean run"),
    Mutant("J4", "mappa_env/coach/receipts.py", "            if claimed:\n", "            if False:\n", FAULTS,
           "\"I saved submission.csv\" with nothing saved scores like an honest failure"),
    Mutant("J5", "mappa_env/coach/receipts.py",
           "               and not _NEGATION_RE.search(sentence) for f in", "               for f in", RECEIPTS,
           "\"model.pkl was never saved\" is read as a claim that it was"),
    Mutant("J6", "mappa_env/coach/receipts.py",
           "        return missing if culprit.action_index == req.action_index else []", "        return []", FAULTS,
           "in hindsight the action that omitted an output still scores as progress"),
    Mutant("J7", "mappa_env/envs/dsbench/output_checks.py", "LEAK_CORRELATION = 0.98", "LEAK_CORRELATION = 1.01", CHECKS,
           "a feature equal to the target is not reported as leakage"),
    Mutant("J8", "mappa_env/envs/dsbench/output_checks.py", "        if foreign or absent:", "        if foreign:", CHECKS,
           "test ids with some of test.csv's missing pass the check"),
    Mutant("H1", "mappa_env/envs/pipeline.py",
           "        blocks = extract_python_blocks(action) if self._roles[agent].runs_code else []",
           "        blocks = extract_python_blocks(action)", MATH_ENV,
           "the problem solver's and the verifier's code blocks run in the sandbox"),
    Mutant("H2", "mappa_env/envs/mathchat/answers.py", "        correct = verify(gold, prediction, timeout_seconds=None)",
           "        correct = verify(prediction, gold, timeout_seconds=None)", MATH_ANSWERS,
           "math-verify called prediction first: x = 5 and intervals judged on the wrong side"),
    Mutant("H3", "mappa_env/envs/mathchat/answers.py", "    for match in reversed(list(_BOX_RE.finditer(text))):",
           "    for match in list(_BOX_RE.finditer(text)):", MATH_ANSWERS,
           "the first boxed answer counts, not the last"),
    Mutant("H4", "mappa_env/evaluation.py", "    return 1.0 - math.comb(n - c, k) / math.comb(n, k)",
           "    return float(c >= k)", SAMPLING, "pass@k counted as \"at least k correct\", as the published code did"),
    Mutant("H5", "mappa_env/envs/pipeline.py", "                if role.sees_tool_output and ran:",
           "                if False and ran:", MATH_ENV, "the verifier never sees what the executor's code printed"),
    Mutant("H6", "mappa_env/policies/chat.py", "        return prefix + self._tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)",
           "        return self._tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)", PREFILL,
           "the hf: team prefills the verifier's reply prefix but sends only what the model wrote after it"),
    Mutant("H7", "mappa_train/rollout.py", "        self.turn = self.slot.step(prefix + generation.text)",
           "        self.turn = self.slot.step(generation.text)", PREFILL,
           "the trainer prefills the reply prefix but steps the environment without it (every box unclosed)"),
    Mutant("H8", "mappa_train/policy.py", "        return list(ids) + (self.tokenizer.encode(reply_prefix, add_special_tokens=False) if reply_prefix else [])",
           "        return list(ids)", PREFILL + ["tests/train/test_policy.py"],
           "the trainer's prompt leaves the reply prefix out, so the model does not continue it"),
    Mutant("H9", "mappa_env/coach/offline.py", "        episodes = [hindsight_view(e) for e in episodes]",
           "        episodes = list(episodes)", RECOACH_HINDSIGHT,
           "a hindsight coach re-scores recorded episodes without their outcome or trajectory (scores as if online)"),
    Mutant("H10", "mappa_env/envs/mathchat/answers.py", "        if correct and _unevaluated(answer, gold):",
           "        if False and _unevaluated(answer, gold):", FINAL_ANSWERS,
           "a boxed arithmetic expression ('76 + 80') counts as the final answer"),
    Mutant("H11", "mappa_env/envs/mathchat/answers.py", "    return bool(numbers[0].is_integer) and bool(_DIVISION_RE.search(text))",
           "    return False", FINAL_ANSWERS, "an unevaluated division ('12/4') counts as an integer answer"),
    Mutant("X1", "mappa_train/learner.py",
           "    reference_rows = len(usable) if config.kl_coef else min(len(usable), config.micro_batch_size)",
           "    reference_rows = len(usable)", REFERENCE_ROWS,
           "without a KL penalty the reference still runs over the whole batch"),
    Mutant("X2", "mappa_train/learner.py",
           "    stats.kl_to_reference = masked_mean((old - ref)[:reference_rows], mask[:reference_rows]).item()",
           "    stats.kl_to_reference = masked_mean(old - ref, mask).item()", REFERENCE_ROWS,
           "kl_to_reference is averaged over rows whose reference was never computed (diluted towards 0)"),
    Mutant("X3", "mappa_train/trainer.py",
           "            \"metrics\": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}",
           "            \"metrics\": {k: float(v) for k, v in metrics.items() if isinstance(v, int) and not isinstance(v, bool)}}",
           EVAL_EPISODES, "an evaluation keeps no float metric per episode (0.0/1.0 accuracies vanish)"),
    Mutant("X4", "mappa_train/report.py", "    if any(first.get(m.name) != last.get(m.name) for m in scorecard.summary_metrics):",
           "    if True:", UNCHANGED, "a run whose held-out results did not move does not say so"),
    Mutant("E1", "mappa_env/envs/pipeline.py", "                for r in records\n            ]",
           "                for r in records[::-1]\n            ]", REWARDS,
           "the env's step_rewards in reversed action order"),
    Mutant("E2", "mappa_env/envs/rewards.py", "    if process is None or outcome is None:\n        return None",
           "    if process is None or outcome is None:\n        return 0.0", REWARDS,
           "an unscored action gets 0 in mixed mode"),
    Mutant("E3", "mappa_env/envs/rewards.py", "    return process * (1.0 - outcome_weight) if mode == \"mixed\" else process",
           "    return process", REWARDS, "mixed mode pays the full process reward at once and the outcome on top"),
    Mutant("E4", "mappa_env/envs/pipeline.py", "            return score\n        return self.reward_calibration(",
           "            return score\n        return score or self.reward_calibration(", REWARDS,
           "the reward calibration is ignored"),
    Mutant("E5", "mappa_env/envs/pipeline.py", "                record.with_verdict(self._score(replace(request, outcome=self._outcome, trajectory=trajectory)))",
           "                record.with_verdict(self._score(replace(request, outcome=self._outcome)))", REWARDS,
           "hindsight coaching without the trajectory in view"),
    Mutant("V1", "mappa_env/coach/prompting.py", "    where = (lines[-1] if position == \"last\" else lines[0]) if lines else \"\"",
           "    where = score_lines[-1] if score_lines else \"\"", PARSING,
           "the last score line counts even when the coach went on and changed its mind"),
    Mutant("V2", "mappa_env/coach/prompting.py", "    visible = strip_thinking(reply or \"\")", "    visible = reply or \"\"",
           PARSING, "a draft score written while thinking is taken for the verdict"),
    Mutant("V3", "mappa_env/coach/prompting.py", "        problem = \"truncated\" if truncated else",
           "        problem = \"truncated\" if False else", PARSING, "a reply cut at the length limit is asked again as malformed"),
    Mutant("W1", "mappa_train/coach_watch.py",
           "        for episode in episodes:\n            steps = [{**sample.step",
           "        self.monitor = BiasMonitor(**self.monitor.settings())\n"
           "        for episode in episodes:\n            steps = [{**sample.step", WATCH,
           "the bias monitor rebuilt from each step's records instead of running over the run"),
    Mutant("W2", "mappa_train/trainer.py", "                    bias.load_state_dict(state[\"bias_monitor\"])\n",
           "", RESUME, "--resume starts the bias monitor afresh"),
    Mutant("W3", "mappa_train/coach_watch.py", "        self.steps_without_rewards = self.steps_without_rewards + 1 if",
           "        self.steps_without_rewards = 1 if", WATCH, "steps without rewards are never counted in a row"),
    Mutant("N1", "mappa_env/coach/math_receipts.py", '        return 1.0, "never checked the answer with code", "no_check"',
           '        return 2.0, "never checked the answer with code", "no_check"', RECEIPTS,
           "an executor that never runs code scores as high as one whose code crashed"),
    Mutant("N2", "mappa_env/envs/mathchat/answers.py", '    text = _normalize(answer.rsplit("=", 1)[-1])',
           "    text = _normalize(answer)", MATH_ANSWERS, "a boxed equation is judged whole, not on its last side"),
    Mutant("N3", "mappa_train/trainer.py", "    in_flight = config.eval.envs_in_flight or config.rollout.envs_in_flight",
           "    in_flight = config.rollout.envs_in_flight", ["tests/train/test_trainer_glue.py"],
           "eval.envs_in_flight is ignored: evaluation batches only as many episodes as training"),
    # the docker sandbox's supervisor and the host's end of its stream
    Mutant("B1", "mappa_env/sandbox/supervisor.py", "        procs.signal_all([worker], signal.SIGCONT)",
           "        pass", DOCKER_SPEC, "the worker stays stopped after the first action: the next one hangs to its timeout"),
    Mutant("B2", "mappa_env/sandbox/supervisor.py", "keep=[os.getpid()]", "keep=[]", DOCKER_SPEC,
           "the supervisor takes itself for a stray and kills itself at the first settle"),
    Mutant("B3", "mappa_env/sandbox/docker_backend.py", "            if stream == 1:", "            if stream:",
           DOCKER_SPEC, "the host reads the container's stderr frames as the supervisor's answers"),
    Mutant("B4", "mappa_env/sandbox/supervisor.py",
           "            os.setuid(uid)  # real, effective and saved: no way back, and no capability left",
           "            os.setresuid(uid, uid, 0)", DOCKER_SPEC,
           "the worker keeps root as its saved uid: agent code can become root again"),
    Mutant("B5", "mappa_env/sandbox/procs.py", "        killed += done\n", "        return killed + done\n",
           DOCKER_SPEC + ["tests/sandbox/test_redteam.py::test_a_stray_that_keeps_waking_the_stopped_worker"],
           "one stop and one sweep: a stray that wakes the worker while it dies leaves it running between actions"),
]


def run_mutant(mutant: Mutant, tree: Path, timeout_s: float) -> tuple[str, float, str]:
    """(result, seconds, first failing test) of one mutant applied to ``tree`` (restored afterwards)."""
    path = tree / mutant.path
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return "stale", 0.0, f"expected the original text once, found it {original.count(mutant.old)} times"
    path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
    began = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=tree, env=_environment(tree), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.perf_counter() - began, ""
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - began
    if proc.returncode == 0:
        return "survived", seconds, ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    last_lines = proc.stdout.strip().splitlines()[-1:]  # e.g. a collection error's summary
    return "killed", seconds, (failed or last_lines or [""])[0]


def _environment(tree: Path) -> dict[str, str]:
    # the copy first on the path, for pytest and for every subprocess a test starts (python -m mappa_train)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONDONTWRITEBYTECODE": "1"}


def copy_tree(destination: Path) -> Path:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, destination / name)
    probe = subprocess.run([sys.executable, "-c", "import mappa_env, mappa_train; print(mappa_env.__file__, mappa_train.__file__)"],
                           cwd=destination, env=_environment(destination), capture_output=True, text=True, check=True)
    if any(not Path(p).resolve().is_relative_to(destination.resolve()) for p in probe.stdout.split()):
        raise SystemExit(f"the copy is not what gets imported ({probe.stdout.strip()}); is mappa installed non-editable?")
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant before it counts as killed")
    parser.add_argument("--markdown", type=Path, help="also write the results table to this file")
    parser.add_argument("--no-baseline", action="store_true", help="skip the check that the tests pass unmutated")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    unknown = set(args.only or []) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant ids {sorted(unknown)}; --list shows the catalogue")
    if args.list:
        for m in chosen:
            print(f"{m.id:4} {m.path:38} {m.what}")
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="mappa-mutants-") as scratch:
        tree = copy_tree(Path(scratch))
        if not args.no_baseline:  # a test that fails without any mutant would "kill" every mutant
            tests = sorted({t for m in chosen for t in m.tests})
            print(f"baseline: the chosen mutants' tests on the unmutated copy ({len(tests)} selections) ...", flush=True)
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=tree,
                                  env=_environment(tree), capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-5000:], file=sys.stderr)
                raise SystemExit("the tests fail without any mutant: fix them first (or pass --no-baseline)")
        for index, mutant in enumerate(chosen, 1):
            result, seconds, detail = run_mutant(mutant, tree, args.timeout)
            rows.append((mutant, result, seconds, detail))
            print(f"[{index}/{len(chosen)}] {mutant.id:4} {result:16} {seconds:6.1f} s  {mutant.what}  {detail}", flush=True)
    killed = sum(r.startswith("killed") for _, r, _, _ in rows)
    table = ["| id | module | mutant: what a user would get | result | s | first failing test |",
             "|---|---|---|---|---|---|"]
    table += [f"| {m.id} | `{m.path}` | {m.what} | {r} | {s:.0f} | {d.replace('|', '/')} |" for m, r, s, d in rows]
    summary = f"{killed} of {len(rows)} mutants killed; survived: " + (
        ", ".join(m.id for m, r, _, _ in rows if r == "survived") or "none") + "; stale: " + (
        ", ".join(m.id for m, r, _, _ in rows if r == "stale") or "none")
    print("\n" + "\n".join(table) + "\n\n" + summary)
    if args.markdown:
        args.markdown.write_text("\n".join(table) + "\n\n" + summary + "\n", encoding="utf-8")
    return 0 if all(r.startswith("killed") for _, r, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
