"""Where the directory places a room (its logical shard's database, or its pin), and the
`[storage] shards` settings refused before anything opens."""

from __future__ import annotations

import pytest

from server.config import ConfigError
from server.config_file import load_config
from storage.routing.directory import Directory, Placement
from storage.routing.shards import logical_shard, spread


def test_a_room_goes_to_its_logical_shards_database_unless_it_is_pinned() -> None:
    directory = Directory(3, spread(["a", "b"]), {"hot": "c"})
    shard = logical_shard("lobby")
    assert directory.place("lobby") == Placement("ab"[shard % 2], f"L{shard}")
    assert directory.place("hot") == Placement("c", "room:hot")
    assert directory.targets() == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"db_path": "postgresql://h/c", "shards": ("sqlite:///x.db",)}, "postgresql:// URL"),
        ({"db_path": "hibiki.db", "shards": ("postgresql://h/s",)}, "catalog"),
        (
            {
                "db_path": "postgresql://h/c",
                "shards": ("postgresql://h/s",),
                "replicas": ("postgresql://h/r",),
            },
            "replicas",
        ),
    ],
)
def test_invalid_shard_settings_are_refused(flags: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(None, {}, flags)


def test_shards_come_from_the_environment_comma_separated() -> None:
    env = {
        "HIBIKI_DB_PATH": "postgresql://h/c",
        "HIBIKI_SHARDS": "postgresql://h/a,postgresql://h/b",
    }
    loaded = load_config(None, env, {})
    assert loaded.config.storage.shards == ("postgresql://h/a", "postgresql://h/b")
