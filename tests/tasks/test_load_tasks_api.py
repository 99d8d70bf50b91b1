"""The public API of mappa_env.tasks: argument validation and lookups."""

from __future__ import annotations

import pytest

from mappa_env.tasks import get_task, load_tasks


def test_unknown_split_names_valid_values():
    with pytest.raises(ValueError, match="'train', 'heldout', 'all'"):
        load_tasks("builtin", split="test")


def test_unknown_suite_lists_valid_names():
    with pytest.raises(ValueError, match=r"'builtin', 'dsbench', 'user'"):
        load_tasks("kaggle")


def test_a_suite_path_that_does_not_exist_lists_the_valid_suites():
    import mappa_env

    with pytest.raises(ValueError, match=r"'/nonexistent' is neither a suite name \(builtin, dsbench, user\) nor an existing"):
        mappa_env.make("dsbench-v0", suite="/nonexistent")


def test_unknown_dsbench_options_name_the_closest_one(tmp_path):
    with pytest.raises(ValueError, match=r"dsbench suite \(suite_kwargs\) has no argument 'nmes'. Did you mean 'names'\?"):
        load_tasks("dsbench", root=tmp_path, nmes=["x"])


def test_dsbench_requires_root():
    with pytest.raises(ValueError, match="root="):
        load_tasks("dsbench")


def test_get_task_suggests_close_ids():
    with pytest.raises(ValueError, match="Did you mean 'penguin-species'"):
        get_task("penguin-specie")
    with pytest.raises(ValueError, match="Did you mean 'builtin/penguin-species'"):
        get_task("builtin/penguin-specie")
    assert get_task("penguin-species").id == get_task("builtin/penguin-species").id == "builtin/penguin-species"
