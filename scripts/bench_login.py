"""A real user's login latency while bad logins flood the server, against the same without a flood.

Starts hibiki (a subprocess, real scrypt cost unless `--scrypt-n`), registers the user, then per
phase times `--logins` back-to-back logins of the user from 127.0.0.1 and prints p50/p99/max:
quiet; while `--flood` tasks send wrong passwords for the same account as fast as answers come,
from one address (127.0.0.2); and from `--flood-addresses` addresses (127.0.0.2 ...), the same
tasks spread over them. For reference, the same tasks also flood `GET /healthz` from one address:
what any flood of cheap requests costs the user's login (the floor once bad logins are refused
before their KDF). Each variant is its own server:

- `shipped`: the defaults (throttle on, KDF slots shared in turn by client);
- `unthrottled`: login limits 0, so every bad login runs its KDF: the fair KDF slots alone;
- `baseline`: another checkout (`--baseline-root`, e.g. the commit before the throttle, made with
  `git archive`), run with no throttle settings.

    python scripts/bench_login.py                          # shipped and unthrottled
    git archive e52dcff | tar -x -C /tmp/hibiki-before
    python scripts/bench_login.py --baseline-root /tmp/hibiki-before --variants shipped,baseline
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("shipped", "unthrottled", "baseline")
USER, PASSWORD = "alice", "correct horse"
_LISTENING = re.compile(rb"listening on [0-9.]+:(\d+)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="shipped,unthrottled")
    parser.add_argument("--baseline-root", type=Path, help="checkout run as `baseline`")
    parser.add_argument("--logins", type=int, default=40, help="timed logins per phase")
    parser.add_argument("--flood", type=int, default=50, help="concurrent bad-login tasks")
    parser.add_argument("--flood-addresses", type=int, default=4, help="for the spread phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of flood before timing")
    parser.add_argument("--scrypt-n", type=int, default=None, help="default: the server's (2**14)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)} (of {', '.join(VARIANTS)})")
    if "baseline" in variants and args.baseline_root is None:
        parser.error("the baseline variant needs --baseline-root")
    if not 1 <= args.flood_addresses <= 250:
        parser.error("--flood-addresses must be 1..250 (127.0.0.2 ...)")
    args.variants = variants
    return args


class Server:
    """`python -m server.cli serve` from `root` (so that checkout's code runs), env settings."""

    def __init__(self, root: Path, workdir: Path, settings: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIBIKI_")}
        env |= {f"HIBIKI_{key.upper()}": value for key, value in settings.items()}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the other checkout as it was
        command = [sys.executable, "-m", "server.cli", "serve", "--port", "0"]
        command += ["--db", str(workdir / "hibiki.db"), "--log-format", "json"]
        self.log = workdir / "server.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.port = self._wait_listening()

    def _wait_listening(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            match = _LISTENING.search(self.log.read_bytes())
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"the server did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def client(port: int, address: str, connections: int = 10) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=address, limits=httpx.Limits(max_connections=connections)
    )
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=60)


async def timed_logins(http: httpx.AsyncClient, count: int) -> list[float]:
    """Seconds per login of the real user; exits if one is refused (that is a lockout)."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = await http.post("/api/login", json={"name": USER, "password": PASSWORD})
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(
                f"the real user's login failed: {response.status_code} {response.text}"
            )
    return seconds


async def flood_phase(
    port: int,
    legit: httpx.AsyncClient,
    args: argparse.Namespace,
    addresses: list[str],
    *,
    healthz: bool = False,
) -> dict[str, Any]:
    """Time the user's logins while `args.flood` tasks, spread over `addresses`, send bad logins
    (or `GET /healthz`) as fast as they are answered."""
    answers: Counter[int] = Counter()
    clients = [client(port, a, connections=args.flood) for a in addresses]
    guess = {"name": USER, "password": "guess!"}

    async def flood(http: httpx.AsyncClient) -> None:
        while True:
            if healthz:
                response = await http.get("/healthz")
            else:
                response = await http.post("/api/login", json=guess)
            answers[response.status_code] += 1

    try:
        async with trio.open_nursery() as nursery:
            for i in range(args.flood):
                nursery.start_soon(flood, clients[i % len(clients)])
            await trio.sleep(args.warmup)
            before, started = sum(answers.values()), time.perf_counter()
            seconds = await timed_logins(legit, args.logins)
            rate = (sum(answers.values()) - before) / (time.perf_counter() - started)
            nursery.cancel_scope.cancel()
    finally:
        for http in clients:
            await http.aclose()
    return _summary(seconds) | {"flood_answers_per_s": round(rate), "flood_answers": dict(answers)}


def _summary(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(ms[-1], 1),
    }


async def measure(port: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    async with client(port, "127.0.0.1") as legit:
        response = await legit.post("/api/register", json={"name": USER, "password": PASSWORD})
        if response.status_code != 201:
            raise SystemExit(f"register: {response.status_code} {response.text}")
        await timed_logins(legit, 3)  # warm-up: connections, caches
        phases = {"quiet": _summary(await timed_logins(legit, args.logins))}
        reference = await flood_phase(port, legit, args, ["127.0.0.2"], healthz=True)
        phases["healthz flood, 1 address"] = reference
        phases["flood, 1 address"] = await flood_phase(port, legit, args, ["127.0.0.2"])
        if args.flood_addresses > 1:
            spread = [f"127.0.0.{2 + i}" for i in range(args.flood_addresses)]
            name = f"flood, {args.flood_addresses} addresses"
            phases[name] = await flood_phase(port, legit, args, spread)
        return phases


def settings_of(variant: str, args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    settings = {} if args.scrypt_n is None else {"scrypt_n": str(args.scrypt_n)}
    if variant == "baseline":
        return args.baseline_root.resolve(), settings
    if variant == "unthrottled":
        settings |= {"login_address_limit": "0", "login_account_limit": "0"}
    return ROOT, settings


def main() -> int:
    args = parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "scrypt_n": args.scrypt_n or 2**14}
    results |= {"logins": args.logins, "flood": args.flood, "variants": {}}
    print(f"{args.logins} logins per phase; flood of {args.flood} tasks; {os.cpu_count()} CPUs")
    print(f"{'variant':<12} {'phase':<25} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  flood answers")
    for variant in args.variants:
        root, settings = settings_of(variant, args)
        with tempfile.TemporaryDirectory(prefix="hibiki-login-") as tmp:
            server = Server(root, Path(tmp), settings)
            try:
                phases = trio.run(measure, server.port, args)
            finally:
                server.stop()
        results["variants"][variant] = phases
        for phase, r in phases.items():
            flood = ""
            if "flood_answers" in r:
                counts = ", ".join(f"{n}x{code}" for code, n in sorted(r["flood_answers"].items()))
                flood = f"{r['flood_answers_per_s']}/s ({counts})"
            figures = f"{r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}"
            print(f"{variant:<12} {phase:<25} {figures}  {flood}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
