"""Configuration: defaults < TOML file < HIBIKI_* environment < flags; every mistake is named."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from server.cli import main
from server.config import SECTION_OF, SECTIONS, Config, ConfigError
from server.config_file import MASK, load_config, mask_secret, to_toml

ROOT = Path(__file__).resolve().parents[2]


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hibiki.toml"
    path.write_text(text)
    return str(path)


def test_defaults_apply_without_any_source() -> None:
    loaded = load_config()
    assert loaded.config.server.port == Config().server.port
    assert loaded.sources == {}


def test_each_source_overrides_the_one_before(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[server]\nport = 9000\nhost = "0.0.0.0"\n[limits]\nrate_burst = 5\n'
        '[ops]\nlog_level = "DEBUG"\n',
    )
    env = {"HIBIKI_HOST": "10.0.0.1", "HIBIKI_RATE_BURST": "7.5", "PATH": "/bin"}
    loaded = load_config(path, env, {"rate_burst": 9.0})
    config = loaded.config
    assert (
        config.server.port,
        config.server.host,
        config.limits.rate_burst,
        config.ops.log_level,
    ) == (
        9000,
        "10.0.0.1",
        9.0,
        "DEBUG",
    )
    assert loaded.sources == {
        "port": f"file {path}",
        "host": "env HIBIKI_HOST",
        "rate_burst": "flag",
        "log_level": f"file {path}",
    }


def test_environment_values_are_parsed_by_field_type() -> None:
    env = {
        "HIBIKI_PORT": " 8081 ",
        "HIBIKI_DRAIN_TIMEOUT": "2.5",
        "HIBIKI_METRICS": "off",
        "HIBIKI_ALLOWED_ORIGINS": "https://a.example, https://b.example,",
        "HIBIKI_SERVER_ID": "node-1",
    }
    config = load_config(env=env).config
    assert config.server.port == 8081
    assert config.timeouts.drain_timeout == 2.5
    assert config.ops.metrics is False
    assert config.chat.allowed_origins == ("https://a.example", "https://b.example")
    assert config.server.server_id == "node-1"


def test_client_variables_are_not_server_settings() -> None:
    assert load_config(env={"HIBIKI_CHAT_PASSWORD": "pw"}).sources == {}


def test_toml_integers_are_accepted_for_float_settings(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, "[timeouts]\nheartbeat_interval = 5\n")).config
    assert config.timeouts.heartbeat_interval == 5.0
    assert isinstance(config.timeouts.heartbeat_interval, float)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nprot = 1", "server.prot: unknown setting (did you mean port?)"),
        ('[server]\nport = "80"', "server.port: expected an integer, got string '80'"),
        ("[server]\nport = true", "server.port: expected an integer, got boolean True"),
        ("[ops]\nmetrics = 1", "ops.metrics: expected true or false, got integer 1"),
        ("[chat]\nallowed_origins = [1]", "chat.allowed_origins: expected a list of strings"),
        (
            "[timeouts]\nheartbeat_interval = nan",
            "timeouts.heartbeat_interval: expected a finite number",
        ),
        ("[server]\nport = 70000", "server.port: 70000 is not a TCP port"),
        ('[ops]\nlog_format = "xml"', "ops.log_format: must be one of auto, json, text"),
        ("[timeouts]\ndrain_timeout = 0", "timeouts.drain_timeout: must be positive"),
        ("[serve]\nport = 1", "serve: unknown table (did you mean server?)"),
        # Sections: a key in the wrong table, a table's key at the top, a table that is not one.
        (
            "[server]\nrate_burst = 1",
            "server.rate_burst: not a [server] setting (it is in [limits])",
        ),
        ("rate_burst = 1", "rate_burst: not a top-level setting (put it under [limits])"),
        ("prot = 1", "prot: unknown setting (did you mean server.port?)"),
        ("limits = 1", "limits: expected a table, got integer 1"),
        ("[limits.rate]\nburst = 1", "limits.rate: unknown setting"),
    ],
)
def test_a_bad_file_setting_is_named_with_its_file(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = _toml(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"file {path}: {expected}" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HIBIKI_PORTT": "1"}, "env HIBIKI_PORTT: portt: unknown setting (did you mean port?)"),
        ({"HIBIKI_PORT": "eighty"}, "env HIBIKI_PORT: port: expected an integer, got 'eighty'"),
        ({"HIBIKI_METRICS": "maybe"}, "env HIBIKI_METRICS: metrics: expected true or false"),
        ({"HIBIKI_RATE_BURST": "-1"}, "env HIBIKI_RATE_BURST: rate_burst: must not be negative"),
        ({"HIBIKI_DRAIN_TIMEOUT": "inf"}, "drain_timeout: expected a finite number, got inf"),
        (
            {"HIBIKI_PRESENCE_TTL": "2", "HIBIKI_PRESENCE_HEARTBEAT": "2"},
            "presence_heartbeat: must be less than presence_ttl",
        ),
        # Environment names carry no section.
        (
            {"HIBIKI_LIMITS__RATE_BURST": "1"},
            "limits__rate_burst: unknown setting (did you mean rate_burst?)",
        ),
    ],
)
def test_a_bad_environment_variable_is_named(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server]\nprot = 1\nport = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"HIBIKI_NOPE": "1"})
    assert [key for key, _ in caught.value.problems] == [
        f"file {path}: server.prot",
        "env HIBIKI_NOPE: nope",
    ]
    # Type and name errors come first; value checks run once the types are right.
    with pytest.raises(ConfigError, match=r"port: -1 is not a TCP port"):
        load_config(_toml(tmp_path, "[server]\nport = -1\n"))


def test_unreadable_or_invalid_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_toml(tmp_path, "[server]\nport = \n"))


def test_show_prints_toml_that_reads_back_to_the_same_config(tmp_path: Path) -> None:
    path = _toml(
        tmp_path, '[chat]\nallowed_origins = ["https://x.example"]\n[server]\nhost = "a\\"b\\tc"\n'
    )
    loaded = load_config(path, {"HIBIKI_PORT": "9001"}, {"metrics": False})
    text = to_toml(loaded)
    assert "port = 9001  # env HIBIKI_PORT" in text
    assert "metrics = false  # flag" in text
    assert load_config(_toml(tmp_path, text)).config == loaded.config


def test_show_prints_one_table_per_section(tmp_path: Path) -> None:
    text = to_toml(load_config(env={"HIBIKI_RATE_BURST": "10"}))
    assert "[limits]\nmax_text = 4000\n" in text
    assert "rate_burst = 10.0  # env HIBIKI_RATE_BURST" in text
    shown = tomllib.loads(text)
    assert {name: set(table) for name, table in shown.items()} == {
        name: {f.name for f in dataclasses.fields(section)} for name, section in SECTIONS.items()
    }
    assert load_config(_toml(tmp_path, text)).config.limits.rate_burst == 10.0


def test_every_setting_has_one_flat_name_in_one_section() -> None:
    names = [f.name for section in SECTIONS.values() for f in dataclasses.fields(section)]
    assert len(names) == len(set(names)) == len(SECTION_OF)
    assert SECTION_OF["rate_burst"] == "limits"
    assert {f.name for f in dataclasses.fields(Config)} == set(SECTIONS)


def test_from_flat_puts_each_name_in_its_section() -> None:
    config = Config.from_flat(port=0, rate_burst=3.0, drain_timeout=1.5)
    assert (config.server.port, config.limits.rate_burst, config.timeouts.drain_timeout) == (
        0,
        3.0,
        1.5,
    )
    assert config.limits.max_text == Config().limits.max_text
    with pytest.raises(ConfigError, match=r"^rate_brust: unknown setting$"):
        Config.from_flat(rate_brust=1.0)
    # Every section's problems at once.
    with pytest.raises(ConfigError) as caught:
        Config.from_flat(port=-1, drain_timeout=0.0)
    assert [key for key, _ in caught.value.problems] == ["port", "drain_timeout"]


def test_every_setting_is_documented_under_its_section() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    for name, section in SECTIONS.items():
        heading = f"#### `[{name}]`"
        assert heading in docs, heading
        table = docs.split(heading, 1)[1].split("\n####", 1)[0]
        for f in dataclasses.fields(section):
            assert f"| `{f.name}` |" in table, (name, f.name)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("redis_url", "redis://:hunter2@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("pg_dsn", "postgresql://hibiki:s3cret@db/hibiki", f"postgresql://hibiki:{MASK}@db/hibiki"),
        ("admin_token", "abc123", MASK),
        ("db_password", "x", MASK),
        ("smtp_secret", "x", MASK),
        ("plain_url", "https://example.org/path", "https://example.org/path"),
        ("token_ttl", 3600.0, 3600.0),  # a number named like a secret is not one
        ("allowed_origins", ("https://u:p@h.example",), (f"https://u:{MASK}@h.example",)),
    ],
)
def test_show_masks_secrets(key: str, value: object, shown: object) -> None:
    assert mask_secret(key, value) == shown


def test_cli_config_show_uses_file_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, "[server]\nport = 9100\n")
    monkeypatch.setenv("HIBIKI_SERVER_ID", "from-env")
    assert main(["config", "show", "--config", path, "--host", "0.0.0.0"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    server = shown["server"]
    assert (server["port"], server["server_id"], server["host"]) == (9100, "from-env", "0.0.0.0")


def test_serve_with_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[timeouts]\nheartbeat_intervl = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--config", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"HIBIKI_PORT": "http", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "heartbeat_intervl: unknown setting (did you mean heartbeat_interval?)" in result.stderr
    assert "env HIBIKI_PORT: port: expected an integer, got 'http'" in result.stderr


def test_chat_is_handed_to_the_terminal_client(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("client.terminal") is None:
        assert main(["chat"]) == 2
        assert "chat client is not installed" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as exited:  # the client's own argparse answers --help
        main(["chat", "--help"])
    assert exited.value.code == 0
    assert "usage: hibiki chat" in capsys.readouterr().out


def test_per_address_caps_come_from_every_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, "[limits]\nmax_connections_per_address = 0\n")
    env = {"HIBIKI_MAX_PENDING_PER_ADDRESS": "8"}
    limits = load_config(path, env).config.limits
    assert (limits.max_connections_per_address, limits.max_pending_per_address) == (0, 8)
    flags = ["--max-connections-per-address", "5", "--max-pending-per-address", "0"]
    assert main(["config", "show", *flags]) == 0
    shown = tomllib.loads(capsys.readouterr().out)["limits"]
    assert (shown["max_connections_per_address"], shown["max_pending_per_address"]) == (5, 0)
    with pytest.raises(ConfigError, match="max_pending_per_address: must not be negative"):
        load_config(env={"HIBIKI_MAX_PENDING_PER_ADDRESS": "-1"})
