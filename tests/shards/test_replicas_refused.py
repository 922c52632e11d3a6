"""`[storage] shards` with `replicas` is refused at load, saying why (docs/operations.md,
"Shards"): the replicas would be the catalog's, which holds none of a sharded room's messages."""

from __future__ import annotations

import pytest

from server.config import ConfigError, StorageConfig

_PG = "postgresql://127.0.0.1/chat"


def test_shards_with_read_replicas_are_refused_with_a_pointer_to_the_docs() -> None:
    with pytest.raises(ConfigError) as refused:
        StorageConfig(db_path=_PG, shards=(_PG + "1",), replicas=(_PG + "-replica",))
    assert refused.value.problems == [
        ("shards", "cannot be combined with replicas yet (see Shards in the docs)")
    ]
    assert StorageConfig(db_path=_PG, shards=(_PG + "1",)).shards == (_PG + "1",)
    assert StorageConfig(db_path=_PG, replicas=(_PG + "-r",)).replicas == (_PG + "-r",)
