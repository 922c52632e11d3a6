"""hibiki server: configuration and `serve`, the whole process as one trio task tree.

`serve` is loaded on first use: importing the configuration (as `hibiki config show` does) does not
import the server's parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.config import Config, ConfigError
from server.config_file import LoadedConfig, load_config

if TYPE_CHECKING:
    from server.app import serve

__all__ = ["Config", "ConfigError", "LoadedConfig", "load_config", "serve"]


def __getattr__(name: str) -> Any:
    if name == "serve":
        from server.app import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
