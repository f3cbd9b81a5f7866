import itertools

from nbp.data.sampler import ResumableSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_stream_covers_each_epoch_once_and_resumes_exactly():
    full = take(ResumableSampler(10, seed=3), 35)
    for epoch in range(3):
        assert sorted(full[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert full[:10] != full[10:20]  # a new permutation every epoch
    assert take(ResumableSampler(10, seed=3, start=13), 22) == full[13:35]
    assert take(ResumableSampler(10, seed=4), 10) != full[:10]


def test_ranks_split_the_stream_and_draws_are_reproducible():
    ranks = [take(ResumableSampler(10, seed=1, rank=r, world_size=2), 5) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10))
    with_draws = take(ResumableSampler(10, seed=1, draws=True), 12)
    assert [i for i, _ in with_draws] == take(ResumableSampler(10, seed=1), 12)
    assert with_draws == take(ResumableSampler(10, seed=1, draws=True), 12)
    assert with_draws[0][1] != with_draws[10][1] or with_draws[0][0] != with_draws[10][0]
