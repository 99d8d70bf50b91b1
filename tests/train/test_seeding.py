"""Seed streams: one root, named streams derived by a stable hash, torch sampling that leaves the caller's RNG alone."""

from __future__ import annotations

import itertools

import pytest

from mappa_train import seeding
from mappa_train.seeding import derive

STREAMS = [value for name, value in vars(seeding).items() if name.isupper() and isinstance(value, str)]


def test_a_named_stream_has_the_documented_value_on_every_machine():
    # SHA-256 of '[0,"episode",0,0]', first 4 bytes: docs/training.md and seeding.derive quote it
    assert derive(0, seeding.EPISODE, 0, 0) == 2963899992
    assert derive(0, "episode", 0, 0) == 2963899992  # the name is the stream: renaming one changes every run


def test_streams_roots_and_indices_all_give_different_seeds():
    assert len(STREAMS) == len(set(STREAMS)) >= 11
    seeds = [derive(root, stream, *indices) for root, stream, indices
             in itertools.product([0, 1, 100_003], STREAMS, [(), (0,), (1,), (0, 1), (1, 0), ("modeler",)])]
    assert len(set(seeds)) == len(seeds)  # the old arithmetic made (seed, step) and (seed + 1, step - k) collide
    assert all(0 <= seed < seeding.SEED_LIMIT for seed in seeds)


def test_the_same_inputs_give_the_same_seed_and_numpy_integers_count_as_integers():
    np = pytest.importorskip("numpy")
    assert derive(7, seeding.GROUP, "analyst") == derive(7, seeding.GROUP, "analyst")
    assert derive(np.int64(7), seeding.EPISODE, np.int32(3)) == derive(7, seeding.EPISODE, 3)
    assert derive(7, seeding.EPISODE, 3) != derive(7, seeding.EPISODE, "3")  # an index keeps its type


@pytest.mark.parametrize("bad", [True, 1.0, None, [1]])
def test_what_is_not_an_integer_or_a_string_is_refused(bad):
    with pytest.raises(TypeError, match="integers or strings"):
        derive(0, seeding.EPISODE, bad)
    with pytest.raises(TypeError):
        derive(bad, seeding.EPISODE)


def test_sampling_in_a_torch_fork_depends_on_its_seed_only_and_leaves_the_global_state_alone():
    torch = pytest.importorskip("torch")
    torch.manual_seed(11)
    before = torch.get_rng_state()
    with seeding.torch_rng(5):
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(3)  # the global state moves on; the fork's draws do not care
    with seeding.torch_rng(5, "cpu"):
        again = torch.rand(4)
    with seeding.torch_rng(6):
        other = torch.rand(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
