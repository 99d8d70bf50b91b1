"""The bias monitor: exact running statistics, planted task-type biases found, unbiased data left alone."""

import functools
import json
import math
import re

import numpy as np
import pytest

from mappa_env.coach.bias import BiasFlag, BiasMonitor, monitor_from_records

# Mean coach score per (role, success) situation; the same for both task types unless a bias is planted.
SITUATIONS = {
    ("data_engineer", True): 7.0, ("data_engineer", False): 3.5,
    ("modeler", True): 6.5, ("modeler", False): 3.0,
    ("analyst", True): 7.5, ("analyst", False): 2.5,
}
SD = 0.8
TASK_TYPES = ("classification", "regression")


def synthetic(seed, *, plant=0.0, n=60, situations=SITUATIONS, sd=SD):
    """Scores for every situation and task type from the same distribution, plus ``plant`` on regression."""
    rng = np.random.default_rng(seed)
    records = []
    for task_type in TASK_TYPES:
        for (role, success), mu in situations.items():
            shift = plant if task_type == "regression" else 0.0
            for s in np.clip(rng.normal(mu + shift, sd, n), 0.0, 10.0):
                records.append({"score": float(s), "task_type": task_type, "role": role, "success": success})
    return records


def flag_keys(flags):
    return {(f.role, f.outcome, f.higher, f.lower) for f in flags}


def all_comparisons(situations=SITUATIONS, *, per_role=True):
    """The flags a regression plant on every situation should raise: per role, and pooled per outcome."""
    keys = {("*", "success" if ok else "failure", "regression", "classification") for _, ok in situations}
    if per_role:
        keys |= {(role, "success" if ok else "failure", "regression", "classification") for role, ok in situations}
    return keys


# ---------------------------------------------------------------- statistics


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
    with pytest.raises(ValueError, match="needs score"):
        monitor_from_records([{"score": 1.0, "task_type": "regression", "role": "modeler"}])


# ---------------------------------------------------------------- drift


def test_planted_bias_raises_exactly_the_expected_flags():
    flags = monitor_from_records(synthetic(0, plant=1.5)).drift()
    assert flag_keys(flags) == all_comparisons()
    assert len(flags) == 8
    for f in flags:
        assert isinstance(f, BiasFlag)
        assert 1.2 < f.difference < 1.8 and f.difference > 2.58 * f.stderr
        n = "n=180/180" if f.role == "*" else "n=60/60"  # pooled counts are totals over the three roles
        assert f.message.startswith("regression actions of ") and f.message.endswith(f"above classification ({n})")
    modeler = next(f for f in flags if (f.role, f.outcome) == ("modeler", "success"))
    assert re.fullmatch(
        r"regression actions of the modeler with successful outcomes score 1\.\d\d points above "
        r"classification \(n=60/60\)",
        modeler.message,
    )
    pooled = next(f for f in flags if (f.role, f.outcome) == ("*", "failure"))
    assert pooled.message.startswith("regression actions of all roles with failed outcomes score ")


def test_planted_bias_in_classification_names_classification_higher():
    records = synthetic(1, plant=-1.5)
    flags = monitor_from_records(records).drift()
    assert len(flags) == 8 and all((f.higher, f.lower) == ("classification", "regression") for f in flags)


def test_no_bias_no_flags_across_seeds():
    # 8 comparisons per seed; per comparison a false flag here has a chance of about 0.1 % (1,000 seeds).
    flagged = [(seed, f.message) for seed in range(25) for f in monitor_from_records(synthetic(seed)).drift()]
    assert flagged == []


def test_small_bias_below_threshold_is_not_flagged():
    records = synthetic(3, plant=0.3, n=300)
    assert monitor_from_records(records).drift() == []
    # The gap is real and significant at this size: only the threshold keeps it from being flagged.
    assert flag_keys(monitor_from_records(records, threshold=0.0).drift()) == all_comparisons()


def test_counts_below_min_count_are_not_flagged():
    records = synthetic(4, plant=1.5, n=15, situations={("modeler", True): 6.5})
    assert monitor_from_records(records, min_count=20).drift() == []
    flags = monitor_from_records(records, min_count=15).drift()
    assert flag_keys(flags) == {("modeler", "success", "regression", "classification")}


def test_bias_spread_thinly_over_roles_is_caught_by_the_pooled_level():
    situations = {(f"role_{i}", ok): 3.0 + i * 0.5 + (2.0 if ok else 0.0) for i in range(5) for ok in (True, False)}
    records = synthetic(5, plant=1.0, n=10, situations=situations)
    flags = monitor_from_records(records, min_count=20).drift()
    assert flag_keys(flags) == all_comparisons(situations, per_role=False)
    assert all((f.count_higher, f.count_lower) == (50, 50) for f in flags)


def test_role_mix_alone_is_not_a_bias():
    # Regression episodes hold mostly analyst actions (high scores), classification mostly data_engineer
    # actions (low scores); within each role the coach treats both task types alike.
    rng = np.random.default_rng(6)
    monitor = BiasMonitor()
    for task_type, n_analyst, n_engineer in (("regression", 80, 6), ("classification", 6, 80)):
        for role, n, mu in (("analyst", n_analyst, 7.5), ("data_engineer", n_engineer, 4.0)):
            for s in rng.normal(mu, SD, n):
                monitor.update(float(s), task_type=task_type, role=role, success=True)
    groups = monitor.groups()
    naive = {
        t: sum(groups[(t, r, "success")].mean * groups[(t, r, "success")].count for r in ("analyst", "data_engineer"))
        / sum(groups[(t, r, "success")].count for r in ("analyst", "data_engineer"))
        for t in TASK_TYPES
    }
    assert naive["regression"] - naive["classification"] > 2.5  # plain pooling would cry bias
    assert abs(monitor.scalars()["coach/bias/gap/*/success"]) < 0.5
    assert monitor.drift() == []


def test_pooled_gap_by_hand():
    # Role a: regression [8, 9] vs classification [6, 8] (gap 1.5); role b: no gap, twice the weight.
    scores = {("a", "regression"): [8, 9], ("a", "classification"): [6, 8],
              ("b", "regression"): [5, 5, 6, 6], ("b", "classification"): [5, 6, 5, 6]}
    monitor = BiasMonitor(min_count=2, threshold=0.4, z=1.0)
    for (role, task_type), xs in scores.items():
        for x in xs:
            monitor.update(x, task_type=task_type, role=role, success=True)
    # weights n_a n_b / (n_a + n_b): a → 1, b → 2; gap = (1 * 1.5 + 2 * 0) / 3
    assert monitor.scalars()["coach/bias/gap/*/success"] == pytest.approx(0.5)
    flags = {f.role: f for f in monitor.drift()}
    assert set(flags) == {"a", "*"}
    assert flags["a"].stderr == pytest.approx(math.sqrt(0.5 / 2 + 2 / 2))
    assert flags["*"].stderr == pytest.approx(math.sqrt((1 / 3) ** 2 * 1.25 + (2 / 3) ** 2 * (2 * (1 / 3) / 4)))
    assert (flags["*"].count_higher, flags["*"].count_lower) == (6, 6)


# ---------------------------------------------------------------- calibration


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


# ---------------------------------------------------------------- merge, checkpoint, scalars


def test_merge_equals_single_pass():
    records = synthetic(9, plant=1.5)
    order = np.random.default_rng(0).permutation(len(records))
    shuffled = [records[i] for i in order]
    shuffled[5] = {**shuffled[5], "score": None}
    parts = [monitor_from_records(shuffled[i::3]) for i in range(3)]
    part_dict = parts[1].to_dict()
    merged = functools.reduce(BiasMonitor.merge, parts[1:], BiasMonitor().merge(parts[0]))
    single = monitor_from_records(shuffled)
    assert parts[1].to_dict() == part_dict  # the merged-in monitor is left unchanged
    assert merged.groups().keys() == single.groups().keys()
    for key, st in single.groups().items():
        other = merged.groups()[key]
        assert (other.count, other.unscored) == (st.count, st.unscored)
        assert other.mean == pytest.approx(st.mean, rel=1e-12) and other.std == pytest.approx(st.std, rel=1e-9)
    assert [f.message for f in merged.drift()] == [f.message for f in single.drift()]
    with pytest.raises(TypeError):
        merged.merge({"groups": []})


def test_to_dict_from_dict_round_trip():
    monitor = monitor_from_records(synthetic(10, plant=1.5), min_count=30, threshold=0.7, z=3.0)
    monitor.update(None, task_type="regression", role="modeler", success=None)
    restored = BiasMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
    assert (restored.min_count, restored.threshold, restored.z) == (30, 0.7, 3.0)
    assert restored.to_dict() == monitor.to_dict()
    assert restored.drift() == monitor.drift() and len(restored.drift()) == 8
    assert restored.groups()[("regression", "modeler", "unknown")].unscored == 1
    with pytest.raises(ValueError, match="version"):
        BiasMonitor.from_dict({**monitor.to_dict(), "version": 99})


def test_scalars_tag_names_and_values():
    monitor = BiasMonitor(min_count=2)
    for s in (6.0, 8.0):
        monitor.update(s, task_type="classification", role="modeler", success=True)
    for s in (8.0, 9.0):
        monitor.update(s, task_type="regression", role="modeler", success=True)
    monitor.update(None, task_type="regression", role="analyst", success=None)
    scalars = monitor.scalars()
    assert scalars == {
        "coach/bias/classification/modeler/success/mean": 7.0,
        "coach/bias/classification/modeler/success/count": 2.0,
        "coach/bias/classification/modeler/success/unscored": 0.0,
        "coach/bias/regression/analyst/unknown/count": 0.0,
        "coach/bias/regression/analyst/unknown/unscored": 1.0,
        "coach/bias/regression/modeler/success/mean": 8.5,
        "coach/bias/regression/modeler/success/count": 2.0,
        "coach/bias/regression/modeler/success/unscored": 0.0,
        "coach/bias/gap/modeler/success": 1.5,
        "coach/bias/flags": 0.0,  # 1.5 points, but not significant: 1.5 < 2.58 * sqrt(2/2 + 0.5/2)
    }
    planted = monitor_from_records(synthetic(11, plant=1.5)).scalars()
    assert planted["coach/bias/flags"] == 8.0
    assert 1.2 < planted["coach/bias/gap/*/success"] < 1.8 and 1.2 < planted["coach/bias/gap/analyst/failure"] < 1.8
    groups = {f"coach/bias/{t}/{r}/{'success' if ok else 'failure'}" for t in TASK_TYPES for r, ok in SITUATIONS}
    roles = ("data_engineer", "modeler", "analyst", "*")
    gaps = {f"coach/bias/gap/{r}/{o}" for r in roles for o in ("success", "failure")}
    expected = {f"{g}/{stat}" for g in groups for stat in ("mean", "count", "unscored")} | gaps | {"coach/bias/flags"}
    assert set(planted) == expected and len(expected) == 45
