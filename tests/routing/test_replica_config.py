"""Replica settings: `--db-replica URL` (repeatable), `[storage] replicas`, HIBIKI_REPLICAS;
`config show` masks their passwords. And the routing package's public surface, pinned."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import storage.routing
from server.cli import main
from server.config import ConfigError
from server.config_file import MASK, load_config

A = "postgresql://hibiki:s3cret@replica-a:5432/hibiki"
B = "postgresql://replica-b/hibiki"
PRIMARY = "postgresql://primary/hibiki"


def test_replicas_come_from_the_file_env_and_repeated_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hibiki.toml"
    path.write_text(
        f'[storage]\ndb_path = "{PRIMARY}"\nreplicas = ["{A}"]\nreplica_max_lag = 2.5\n'
    )
    assert load_config(str(path)).config.storage.replicas == (A,)
    env = {
        "HIBIKI_DB_PATH": PRIMARY,
        "HIBIKI_REPLICAS": f"{A}, {B}",
        "HIBIKI_REPLICA_TIMEOUT": "0.5",
    }
    from_env = load_config(None, env).config.storage
    assert (from_env.replicas, from_env.replica_timeout) == ((A, B), 0.5)
    assert (
        main(["config", "show", "--config", str(path), "--db-replica", A, "--db-replica", B]) == 0
    )
    out = capsys.readouterr().out
    assert "s3cret" not in out
    shown = tomllib.loads(out)["storage"]
    assert shown["replicas"] == [f"postgresql://hibiki:{MASK}@replica-a:5432/hibiki", B]
    assert shown["replica_max_lag"] == 2.5


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"replicas": ("mysql://x/y",)}, "replicas: each must be a postgresql:// URL"),
        ({"replicas": (B,), "db_path": "hibiki.db"}, "replicas: need a postgresql:// db_path"),
        ({"replica_max_lag": 0.0}, "replica_max_lag: must be positive"),
        ({"replica_timeout": -1.0}, "replica_timeout: must be positive"),
        ({"replica_probe_interval": 0.0}, "replica_probe_interval: must be positive"),
    ],
)
def test_invalid_replica_settings_are_refused(flags: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(None, {}, flags)


def test_the_routing_surface_is_pinned() -> None:
    assert set(storage.routing.__all__) == {
        "FALLBACK_REASONS",
        "LOGICAL_SHARDS",
        "SHARD_LOCK_KEY",
        "SHARD_MIGRATIONS",
        "SHARD_VERSION_TABLE",
        "apply_shard_schema",
        "Directory",
        "MoveFailed",
        "MoveResult",
        "PartListener",
        "ShardedMessageStore",
        "ShardOutbox",
        "ShardOutboxes",
        "ShardedStore",
        "logical_shard",
        "move_logical",
        "pin_room",
        "ProbePolicy",
        "ReplicaLag",
        "ReplicaReads",
        "ReplicaRouter",
        "RouterCounts",
        "State",
        "attach_replicas",
    }
    for name in storage.routing.__all__:
        assert getattr(storage.routing, name) is not None
