"""The key layout: every partition's hash tag lands on its own evenly spaced slot."""

from __future__ import annotations

from watchlog.core import keys


def test_keys_every_tag_lands_on_its_slot() -> None:
    assert [keys.partition_slot(p) for p in range(keys.PARTITIONS)] == [
        p * keys.SLOTS // keys.PARTITIONS for p in range(keys.PARTITIONS)]


def test_keys_tags_are_the_ones_the_search_finds() -> None:
    assert [keys.find_tag(p) for p in range(4)] == list(keys.TAGS[:4])


def test_keys_of_one_partition_share_its_tag() -> None:
    p, tag = 5, "{" + keys.TAGS[5] + "}"
    for key in (keys.user_index(p, "7", "20261127"), keys.user_aggregates(p, "7", "20261127"),
                keys.fleet_index(p, "20261127"), keys.fleet_aggregates(p, "20261127"),
                keys.active_users(p, "20261127"), keys.bodies(p, "20261127"), keys.feed(p)):
        assert tag in key


def test_keys_partition_of_a_user_is_stable() -> None:
    assert keys.partition_of("7") == keys.partition_of("7") == 2
    assert keys.day_of(1_795_800_000_000) == "20261127"
