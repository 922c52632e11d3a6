"""The hypercorn internals that server/http/bridge.py drives, pinned.

hypercorn's public `hypercorn.trio.serve` accepts on sockets it binds itself; the bridge instead
hands it a connection the listener has already accepted and read the request head from, which
takes hypercorn's TCPServer, WorkerContext and Lifespan (README, "Why hypercorn is pinned"). A
release that changes them must fail here, naming what changed, rather than as a hung request.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app
from packaging.requirements import Requirement

from server.http.bridge import ReplayStream

ROOT = Path(__file__).resolve().parents[2]


def _hypercorn_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [spec] = [d for d in project["dependencies"] if Requirement(d).name.lower() == "hypercorn"]
    return Requirement(spec)


def test_hypercorn_is_pinned_below_the_next_release_and_installed_within_the_pin() -> None:
    requirement = _hypercorn_requirement()
    assert any(s.operator == "<" for s in requirement.specifier), requirement
    assert requirement.specifier.contains(version("hypercorn")), (
        f"hypercorn {version('hypercorn')} is installed; the bridge is tested with {requirement}"
    )


@pytest.mark.parametrize(
    ("callable_", "parameters"),
    [
        (TCPServer.__init__, ["self", "app", "config", "context", "state", "stream"]),
        (Lifespan.__init__, ["self", "app", "config", "state"]),
        (WorkerContext.__init__, ["self", "max_requests"]),
        (wrap_app, ["app", "wsgi_max_body_size", "mode"]),
    ],
    ids=["TCPServer", "Lifespan", "WorkerContext", "wrap_app"],
)
def test_the_bridge_calls_hypercorn_internals_with_their_parameters(
    callable_: Callable[..., Any], parameters: list[str]
) -> None:
    assert list(inspect.signature(callable_).parameters) == parameters


def test_the_hypercorn_internals_the_bridge_uses_are_there() -> None:
    config = HypercornConfig()
    for name in ("keep_alive_timeout", "accesslog", "errorlog", "wsgi_max_body_size"):
        assert hasattr(config, name), name
    for name in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, name)), name
    assert inspect.iscoroutinefunction(TCPServer.run)
    context = WorkerContext(None)
    assert inspect.iscoroutinefunction(context.terminated.set)  # stop_keepalive awaits it
    # TCPServer takes a stream without `do_handshake` for plain TCP and reads its `.socket`.
    run = inspect.getsource(TCPServer.run)
    assert "except AttributeError" in run
    assert "self.stream.socket" in run
    assert not hasattr(ReplayStream, "do_handshake")
