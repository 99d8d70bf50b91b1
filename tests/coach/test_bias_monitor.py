"""The bias monitor: a planted tilt on graded actions is flagged; quality, task clustering, repeated looks and
ungraded actions do not make an unbiased coach look biased (each shown against the old raw-mean test, which
fails them); exact running group statistics, checkpoints and merges."""

import functools
import json
import math

import numpy as np
import pytest

from mappa_env.coach.bias import (BiasFlag, BiasMonitor, action_rows, bias_test, monitor_from_records, spent_alpha,
                                  ungraded_comparisons)

TASK_TYPES = ("classification", "regression")
ROLES = ("modeler", "analyst")

# Old-style records for the group statistics and calibration: mean score per (role, success), no quality.
SITUATIONS = {
    ("data_engineer", True): 7.0, ("data_engineer", False): 3.5,
    ("modeler", True): 6.5, ("modeler", False): 3.0,
    ("analyst", True): 7.5, ("analyst", False): 2.5,
}


def synthetic(seed, *, plant=0.0, n=60, sd=0.8):
    """Ungraded scores per situation and task type from the same distribution, plus ``plant`` on regression."""
    rng = np.random.default_rng(seed)
    records = []
    for task_type in TASK_TYPES:
        for (role, success), mu in SITUATIONS.items():
            shift = plant if task_type == "regression" else 0.0
            for s in np.clip(rng.normal(mu + shift, sd, n), 0.0, 10.0):
                records.append({"score": float(s), "task_type": task_type, "role": role, "success": success})
    return records


def quality_score(q):
    """An unbiased coach: the score follows quality only (a slope, and a cap-like step at RPG 0.5)."""
    q = np.clip(q, 0.0, 1.0)
    return 2.0 + 6.0 * q + 1.0 * (q >= 0.5)


def sweep(rng, *, tasks=20, actions=2, bias=0.0, harder=False, task_sd=0.3, noise=0.5, ungraded=0, pool=None,
          graded_only_bias=True):
    """Graded rows of ``tasks`` tasks per type (``pool``: drawn from that many tasks per type instead of new ones).

    ``harder``: regression tasks reach lower RPG (U(-0.1, 0.6) against U(0.3, 1.0)). Each task has its own
    quality and a random effect (``task_sd``) shared by all its actions. ``ungraded``: that many ungraded
    actions per task, all scored 8 whatever the task type (as the receipts coach scores them).
    """
    rows = []
    for task_type in TASK_TYPES:
        for i in range(tasks):
            number = int(rng.integers(pool)) if pool else i
            task_rng = np.random.default_rng([TASK_TYPES.index(task_type), number, 0 if pool else int(rng.integers(2**31))])
            lo, hi = ((-0.1, 0.6) if task_type == "regression" else (0.3, 1.0)) if harder else (0.0, 1.0)
            q, effect = task_rng.uniform(lo, hi), task_rng.normal(0.0, task_sd)
            for a in range(actions):
                role = ROLES[a % 2]
                qa = q + rng.normal(0.0, 0.05)
                tilt = bias if task_type == "regression" else 0.0
                score = quality_score(qa) + 0.5 * (role == "analyst") + effect + rng.normal(0.0, noise) + tilt
                rows.append({"score": float(np.clip(score, 0.0, 10.0)), "task_type": task_type, "role": role,
                             "task_id": f"{task_type}-{number}", "graded": True, "quality": float(qa), "success": True})
            for _ in range(ungraded):
                rows.append({"score": 8.0, "task_type": task_type, "role": "analyst", "task_id": f"{task_type}-{number}",
                             "graded": False, "quality": None, "success": True})
    return rows


def old_raw_mean_flags(rows, *, z=2.58, threshold=0.5):
    """The monitor this one replaced: raw means by task type within (role, outcome), Welch standard errors,
    every action pooled (graded or not), every action independent."""
    flagged = []
    for role in sorted({r["role"] for r in rows}):
        a = [r["score"] for r in rows if r["role"] == role and r["task_type"] == "regression" and r["score"] is not None]
        b = [r["score"] for r in rows if r["role"] == role and r["task_type"] == "classification" and r["score"] is not None]
        diff, se = np.mean(a) - np.mean(b), math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        if abs(diff) >= threshold and abs(diff) > z * se:
            flagged.append((role, diff))
    return flagged


def iid_ols_flag(rows, alpha):
    """The same regression as bias_test's with textbook (independent-errors) standard errors."""
    unclustered = [{**r, "task_id": f"action-{i}"} for i, r in enumerate(rows)]
    return bias_test(unclustered, alpha=alpha).flagged


# ---------------------------------------------------------------- (a) a planted tilt is flagged


def test_a_planted_1_5_points_on_regression_graded_actions_is_flagged():
    rng = np.random.default_rng(0)
    for seed in range(5):
        # regression also harder: only tasks of overlapping quality inform the estimate, so 40 per type
        est = bias_test(sweep(np.random.default_rng(seed), tasks=40, bias=1.5, harder=True))
        assert est.flagged and est.estimable, est.message
        assert 1.0 < est.estimate < 2.0 and est.ci[0] > 0 and est.p < 0.01
        assert est.n_actions == 160 and est.n_tasks == 80 and est.tasks_by_type == {"regression": 40, "classification": 40}
    minus = bias_test(sweep(rng, bias=-1.5))  # classification favoured, equal difficulty
    assert minus.flagged and minus.estimate < -1.0 and minus.ci[1] < 0
    monitor = monitor_from_records(sweep(rng, bias=1.5), min_count=2, min_tasks=2)
    (flag,) = monitor.drift()
    assert isinstance(flag, BiasFlag) and (flag.higher, flag.lower, flag.role) == ("regression", "classification", "*")
    assert flag.message.startswith("regression actions of all roles with graded quality score 1.")
    assert "at equal quality and role" in flag.message and "at look 1" in flag.message


# ---------------------------------------------------------------- (b) quality is not bias


def test_an_unbiased_coach_on_harder_regression_tasks_is_not_flagged_though_raw_means_differ():
    runs, flagged_new, flagged_old = 100, 0, 0
    for seed in range(runs):
        rows = sweep(np.random.default_rng(100 + seed), harder=True)
        est = bias_test(rows)
        flagged_new += est.flagged
        flagged_old += bool(old_raw_mean_flags(rows))
        assert abs(est.estimate) < 1.0
    assert flagged_new / runs <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / runs)  # at most 4 of 100 at alpha = 0.01 (measured: 0.5 %)
    assert flagged_old == runs  # the raw means say "classification scores higher" every time: it is the easier type
    rows = sweep(np.random.default_rng(1), harder=True)
    ((role, diff), *_) = old_raw_mean_flags(rows)
    assert diff < -1.5  # regression's raw mean is far below classification's, with the same coach


# ---------------------------------------------------------------- (c) clustering


def test_many_actions_from_few_tasks_with_a_task_effect_raise_false_alarms_at_the_nominal_rate_only():
    rng = np.random.default_rng(7)
    runs, alpha = 200, 0.05
    alarms = naive = 0
    for run in range(runs):
        rows = sweep(rng, tasks=6, actions=40, task_sd=1.0, noise=0.5)  # 12 tasks, 480 actions, no bias
        alarms += bias_test(rows, alpha=alpha).flagged
        if run < 40:
            naive += iid_ols_flag(rows, alpha)
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)  # 0.096: three binomial standard errors above 5 %
    assert alarms / runs <= bound, f"false-alarm share {alarms / runs:.3f} at a nominal {alpha}"
    assert naive / 40 > 0.4  # the same regression with independent errors: most unbiased runs look biased


# ---------------------------------------------------------------- (d) repeated looks


def test_fifty_looks_on_growing_unbiased_data_keep_the_family_wise_false_alarm_rate_below_alpha():
    rng = np.random.default_rng(11)
    runs, looks, alpha = 40, 50, 0.1
    alerts = naive = 0
    for _ in range(runs):
        monitor = BiasMonitor(min_count=2, min_tasks=3, threshold=0.0, alpha=alpha)
        naive_fired = False
        for step in range(looks):  # each step: two episodes per type on tasks drawn from a pool of 15 per type
            for row in sweep(rng, tasks=2, actions=2, task_sd=0.5, pool=15):
                monitor.add(row)
            est = monitor.look(step=step + 1)
            naive_fired |= est.estimable and est.p <= alpha  # the same test at the full alpha at every look
        alerts += monitor.alert is not None
        naive += naive_fired
        assert monitor.looks >= looks - 3  # estimable once three tasks of each type were drawn: from step 2 or so
    assert alerts / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)  # <= 0.242; measured: see docs/bias.md
    assert naive / runs > 2 * alpha  # testing at the full alpha at every look would raise far more
    assert sum(spent_alpha(alpha, k) for k in range(1, 100_000)) == pytest.approx(alpha, rel=1e-4)


def test_the_alert_fires_once_and_stays_fired_with_the_step_it_fired_at():
    rng = np.random.default_rng(3)
    monitor = BiasMonitor(min_count=2, min_tasks=3)
    assert not monitor.look(step=1).estimable and monitor.looks == 0  # nothing yet: no alpha spent
    for step in range(2, 6):
        for row in sweep(rng, tasks=4, bias=2.0):
            monitor.add(row)
        est = monitor.look(step=step)
    assert monitor.alert is not None and monitor.alert_step == 2 and monitor.alert.look == 1
    assert est.look == 4 and est.alpha == pytest.approx(0.01 * 6 / (math.pi ** 2 * 16))
    assert monitor.scalars()["coach/bias/flags"] == 1.0 and monitor.scalars()["coach/bias/alert"] == 1.0


# ---------------------------------------------------------------- (e) ungraded actions do not dilute


def test_a_tilt_on_graded_actions_is_flagged_among_many_ungraded_actions_all_scored_8():
    rng = np.random.default_rng(5)
    rows = sweep(rng, bias=1.0, ungraded=30)  # 30 ungraded 8s per task: 1,200 of 1,280 actions
    assert sum(not r["graded"] for r in rows) == 1200
    est = bias_test(rows)
    assert est.flagged and est.n_actions == 80 and 0.5 < est.estimate < 1.5
    assert old_raw_mean_flags(rows) == []  # pooled with the 8s, the tilt disappears from the raw means
    comparisons = ungraded_comparisons(rows)  # the 8s themselves: no gap
    assert [(c.role, c.outcome, c.notable) for c in comparisons] == [("analyst", "success", False)]
    assert comparisons[0].gap == pytest.approx(0.0, abs=1e-9)


def test_ungraded_comparisons_use_task_clustered_errors():
    rng = np.random.default_rng(2)
    rows = []
    for task_type in TASK_TYPES:
        for t in range(4):
            effect = rng.normal(0, 1.0)
            rows += [{"score": float(6 + effect + rng.normal(0, 0.1)), "task_type": task_type, "role": "modeler",
                      "task_id": f"{task_type}{t}", "graded": False, "success": False} for _ in range(50)]
    (clustered,) = ungraded_comparisons(rows)
    (iid,) = ungraded_comparisons([{**r, "task_id": ""} for r in rows])
    assert clustered.n_tasks == 8 and iid.n_tasks == 400
    assert clustered.se > 5 * iid.se  # 50 actions of a task are worth about one task, not 50


# ---------------------------------------------------------------- tagging and the test's edges


def test_action_rows_tag_the_action_that_wrote_the_result_and_the_last_action_graded():
    result = {"valid": True, "reason": "ok", "metrics": {"rpg": 0.4}}
    outcome = {"valid": True, "reason": "ok", "metrics": {"rpg": 0.45}}
    steps = [{"agent": "data_engineer", "verdict": {"score": 8.0}, "result": None},
             {"agent": "analyst", "verdict": {"score": 7.0}, "result": result},
             {"agent": "analyst", "verdict": {"score": None}, "result": None}]
    rows = action_rows(steps, outcome, task_id="t1", task_type="regression", episode=3)
    assert [(r.role, r.score, r.graded, r.quality, r.success) for r in rows] == [
        ("data_engineer", 8.0, False, None, True), ("analyst", 7.0, True, 0.4, True), ("analyst", None, True, 0.45, True)]
    assert rows[0].task_id == "t1" and rows[0].episode == "3"
    failed = action_rows(steps[:1], {"valid": False, "reason": "no submission", "metrics": {}}, task_id="t", task_type="c")
    assert [(r.graded, r.quality, r.success) for r in failed] == [(True, None, False)]  # invalid: its own quality level


def test_unscored_graded_actions_are_counted_never_imputed_and_the_test_says_when_it_cannot_run():
    rows = sweep(np.random.default_rng(4), tasks=10)
    rows[0] = {**rows[0], "score": None}
    est = bias_test(rows)
    assert est.n_unscored == 1 and est.n_actions == len(rows) - 1
    few = bias_test(sweep(np.random.default_rng(4), tasks=1))
    assert not few.estimable and not few.flagged and "needs 2 tasks" in few.reason and math.isnan(few.estimate)
    apart = [{**r, "quality": 0.9 if r["task_type"] == "regression" else 0.1} for r in rows]  # no overlap in quality
    assert "confounded" in bias_test(apart).reason


def test_the_standard_error_is_the_textbook_one_for_one_action_per_task():
    rng = np.random.default_rng(9)
    rows = [{"score": float(5 + (t % 2) + rng.normal()), "task_type": TASK_TYPES[t % 2], "role": "analyst",
             "task_id": str(t), "graded": True, "quality": None, "success": False} for t in range(40)]
    est = bias_test(rows)
    a = [r["score"] for r in rows if r["task_type"] == "regression"]
    b = [r["score"] for r in rows if r["task_type"] == "classification"]
    # a two-group comparison with clusters of one: CR2 is the unequal-variance (Welch) standard error
    assert est.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert est.se == pytest.approx(math.sqrt(np.var(a, ddof=1) / 20 + np.var(b, ddof=1) / 20), rel=1e-9)
    assert 30 < est.df < 39


# ---------------------------------------------------------------- group statistics (descriptive)


def test_welford_matches_numpy_per_group():
    rng = np.random.default_rng(7)
    values = {}
    monitor = BiasMonitor()
    for i in range(2000):
        key = (str(rng.choice(TASK_TYPES)), str(rng.choice(["a", "b", "c"])), [True, False, None][i % 3])
        x = float(rng.uniform(0, 10))
        values.setdefault(key, []).append(x)
        monitor.update(x, task_type=key[0], role=key[1], success=key[2])
    single = BiasMonitor()
    single.update(4.25, task_type="regression", role="solo", success=True)
    groups = monitor.groups()
    assert len(groups) == len(values) == 18
    outcome = {True: "success", False: "failure", None: "unknown"}
    for (t, r, s), xs in values.items():
        st = groups[(t, r, outcome[s])]
        assert st.count == len(xs)
        assert st.mean == pytest.approx(np.mean(xs), rel=1e-12)
        assert st.std == pytest.approx(np.std(xs, ddof=1), rel=1e-9)
        assert st.unscored == 0
    assert single.groups()[("regression", "solo", "success")].std == 0.0


def test_unscored_counted_not_averaged():
    monitor = BiasMonitor()
    for score in (2.0, None, 4.0, None, None):
        monitor.update(score, task_type="classification", role="modeler", success=False)
    monitor.update(None, task_type="regression", role="modeler", success=False)
    groups = monitor.groups()
    st = groups[("classification", "modeler", "failure")]
    assert (st.count, st.mean, st.unscored) == (2, 3.0, 3)
    only_none = groups[("regression", "modeler", "failure")]
    assert only_none.count == 0 and only_none.unscored == 1 and math.isnan(only_none.mean)
    scalars = monitor.scalars()
    assert scalars["coach/bias/regression/modeler/failure/unscored"] == 1.0
    assert "coach/bias/regression/modeler/failure/mean" not in scalars  # no score, no mean
    assert "coach/bias/gap/modeler/failure" not in scalars


def test_calibrate_removes_the_planted_gap():
    records = synthetic(8, plant=1.5)
    monitor = monitor_from_records(records)
    raw, calibrated = {}, {}
    for rec in records:
        key = (rec["task_type"], rec["role"], rec["success"])
        raw.setdefault(key, []).append(rec["score"])
        calibrated.setdefault(key, []).append(
            monitor.calibrate(rec["score"], task_type=rec["task_type"], role=rec["role"], success=rec["success"])
        )
    for role, ok in SITUATIONS:
        raw_gap = np.mean(raw[("regression", role, ok)]) - np.mean(raw[("classification", role, ok)])
        cal_gap = np.mean(calibrated[("regression", role, ok)]) - np.mean(calibrated[("classification", role, ok)])
        assert raw_gap > 1.2 and abs(cal_gap) < 0.1
    assert all(0.0 <= s <= 10.0 for scores in calibrated.values() for s in scores)
    assert monitor.calibrate(9.9, task_type="classification", role="analyst", success=True) == 10.0  # clipped


def test_calibrate_is_identity_before_min_count():
    monitor = BiasMonitor(min_count=20)
    for s in (9.0, 9.5, 8.5):
        monitor.update(s, task_type="regression", role="modeler", success=True)
    for s in [3.0] * 25:
        monitor.update(s, task_type="classification", role="modeler", success=True)
    assert monitor.calibrate(9.0, task_type="regression", role="modeler", success=True) == 9.0
    assert monitor.calibrate(3.0, task_type="classification", role="modeler", success=True) == 3.0  # no peer yet
    assert monitor.calibrate(None, task_type="regression", role="modeler", success=True) is None
    assert monitor.calibrate(5.0, task_type="regression", role="unseen", success=None) == 5.0




def test_bad_input_is_rejected():
    monitor = BiasMonitor()
    with pytest.raises(ValueError, match="role"):
        monitor.update(5.0, task_type="regression", role="*", success=True)
    with pytest.raises(ValueError, match="task_type"):
        monitor.update(5.0, task_type="a/b", role="modeler", success=True)
    with pytest.raises(ValueError, match="finite"):
        monitor.update(float("nan"), task_type="regression", role="modeler", success=True)
    with pytest.raises(ValueError, match="min_count"):
        BiasMonitor(min_count=1)
    with pytest.raises(ValueError, match="threshold"):
        BiasMonitor(threshold=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        BiasMonitor(alpha=0.0)
    with pytest.raises(ValueError, match="needs score"):
        monitor_from_records([{"score": 1.0, "task_type": "regression", "role": "modeler"}])


# ---------------------------------------------------------------- merge, checkpoint, scalars


def test_merge_equals_single_pass():
    records = synthetic(9, plant=1.5) + sweep(np.random.default_rng(9), bias=1.5)
    order = np.random.default_rng(0).permutation(len(records))
    shuffled = [records[i] for i in order]
    shuffled[5] = {**shuffled[5], "score": None}
    parts = [monitor_from_records(shuffled[i::3], look=False) for i in range(3)]
    part_dict = parts[1].to_dict()
    merged = functools.reduce(BiasMonitor.merge, parts[1:], BiasMonitor().merge(parts[0]))
    single = monitor_from_records(shuffled, look=False)
    assert parts[1].to_dict() == part_dict  # the merged-in monitor is left unchanged
    assert merged.groups().keys() == single.groups().keys()
    for key, st in single.groups().items():
        other = merged.groups()[key]
        assert (other.count, other.unscored) == (st.count, st.unscored)
        assert other.mean == pytest.approx(st.mean, rel=1e-12) and other.std == pytest.approx(st.std, rel=1e-9)
    assert sorted(map(repr, merged.rows())) == sorted(map(repr, single.rows()))
    merged_look, single_look = merged.look(), single.look()
    assert merged_look.estimate == pytest.approx(single_look.estimate) and merged_look.se == pytest.approx(single_look.se)
    with pytest.raises(TypeError):
        merged.merge({"groups": []})


def test_to_dict_from_dict_round_trip_keeps_rows_looks_and_the_alert():
    monitor = monitor_from_records(synthetic(10) + sweep(np.random.default_rng(10), bias=1.5), min_count=30,
                                   threshold=0.7, z=3.0, min_tasks=3, alpha=0.05, max_rows=5000)
    monitor.update(None, task_type="regression", role="modeler", success=None)
    monitor.look(step=2)
    restored = BiasMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
    assert (restored.min_count, restored.threshold, restored.z, restored.alpha) == (30, 0.7, 3.0, 0.05)
    assert restored.to_dict() == monitor.to_dict()
    assert restored.looks == 2 and restored.alert == monitor.alert and restored.alert_step is None  # fired at look 1
    assert restored.drift() == monitor.drift() and len(restored.drift()) == 1
    assert restored.look() == monitor.look()  # the next look is the third in both
    assert restored.groups()[("regression", "modeler", "unknown")].unscored == 1
    with pytest.raises(ValueError, match="version"):
        BiasMonitor.from_dict({**monitor.to_dict(), "version": 99})
    old = {"version": 1, "min_count": 5, "threshold": 0.5, "z": 2.58,  # a checkpoint of the previous monitor
           "groups": [{"task_type": "regression", "role": "modeler", "outcome": "failure", "count": 2, "mean": 6.5,
                       "m2": 0.0, "unscored": 0}]}
    assert BiasMonitor.from_dict(old).groups()[("regression", "modeler", "failure")].mean == 6.5


def test_the_window_keeps_the_newest_rows():
    monitor = BiasMonitor(max_rows=10)
    for i in range(25):
        monitor.update(float(i % 10), task_type="regression", role="modeler", success=True, task_id=str(i))
    assert [r.task_id for r in monitor.rows()] == [str(i) for i in range(15, 25)]
    assert monitor.groups()[("regression", "modeler", "success")].count == 25  # the group sums keep counting


def test_scalars_tag_names_and_values():
    monitor = BiasMonitor(min_count=2)
    for s in (6.0, 8.0):
        monitor.update(s, task_type="classification", role="modeler", success=True)
    for s in (8.0, 9.0):
        monitor.update(s, task_type="regression", role="modeler", success=True)
    monitor.update(None, task_type="regression", role="analyst", success=None)
    assert monitor.scalars() == {
        "coach/bias/classification/modeler/success/mean": 7.0,
        "coach/bias/classification/modeler/success/count": 2.0,
        "coach/bias/classification/modeler/success/unscored": 0.0,
        "coach/bias/regression/analyst/unknown/count": 0.0,
        "coach/bias/regression/analyst/unknown/unscored": 1.0,
        "coach/bias/regression/modeler/success/mean": 8.5,
        "coach/bias/regression/modeler/success/count": 2.0,
        "coach/bias/regression/modeler/success/unscored": 0.0,
        "coach/bias/gap/modeler/success": 1.5,
        "coach/bias/graded/count": 0.0, "coach/bias/graded/unscored": 0.0,
        "coach/bias/ungraded/count": 4.0, "coach/bias/ungraded/unscored": 1.0,
        "coach/bias/ungraded/modeler/success/gap": 1.5,
        "coach/bias/ungraded/modeler/success/se": pytest.approx(math.sqrt(2 / 2 + 0.5 / 2)),
        "coach/bias/alert": 0.0, "coach/bias/flags": 0.0,  # no graded action: nothing to alert on
    }
    planted = monitor_from_records(sweep(np.random.default_rng(11), bias=1.5), min_count=2, min_tasks=2).scalars()
    assert planted["coach/bias/flags"] == 1.0 and planted["coach/bias/pooled/look"] == 1.0
    assert planted["coach/bias/pooled/ci_low"] < planted["coach/bias/pooled/estimate"] < planted["coach/bias/pooled/ci_high"]
    assert planted["coach/bias/pooled/actions"] == 80.0 and planted["coach/bias/pooled/tasks"] == 40.0
    assert planted["coach/bias/pooled/alpha"] == pytest.approx(spent_alpha(0.01, 1))
    assert 1.0 < planted["coach/bias/graded/analyst/estimate"] < 2.0 and "coach/bias/graded/modeler/estimate" in planted
