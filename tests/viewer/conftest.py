"""Real evaluation results of both teams, recorded once per session for the viewer's tests."""

from __future__ import annotations

import pytest

from mappa_env.evaluation import evaluate, write_results


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory):
    """A directory with two results files of ``evaluate``: dsbench-v0's data engineer that never saves
    X_test.pkl (the analyst then fails, and the coach says whose fault it was), and mathchat-v0's scripted team."""
    directory = tmp_path_factory.mktemp("results")
    write_results(evaluate("buggy-missing-x-test", env_id="dsbench-v0", episodes=2, progress=False, record_requests=True),
                  directory / "eval-dsbench.json")
    write_results(evaluate("scripted", env_id="mathchat-v0", episodes=2, progress=False, record_requests=True),
                  directory / "eval-math.json")
    return directory
