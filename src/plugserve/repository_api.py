"""A running tritonserver's model repository API (HTTP, stdlib only): which versions it has loaded,
loading verified versions pinned by number, and finding the admin key of a server that
`plugserve serve` started on the same repository.

`plugserve serve` (plugserve.server) loads every model through here, and so does
`plugserve build --load URL` for the version it has just built; `--keep` asks each running server
which versions it holds before removing any. The server answers the index with every version it
knows and its state.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plugserve import repository

# The header a restricted API wants (plugserve serve restricts the repository API to it).
ADMIN_HEADER = "plugserve-admin"
# Changed on each load: Triton skips a load whose config is unchanged, and a reload must replace
# every instance, a dead one included.
GENERATION_PARAMETER = "plugserve_generation"
PROBE_MODEL = "plugserve-check-loads-probe"  # check_loads unloads this name, which no repository should hold
# The index's states of a version whose files the server may read; UNAVAILABLE (unloaded, failed) reads none.
HOLDING = ("READY", "LOADING", "UNLOADING")
EXPLICIT_FIX = "start the server with `plugserve serve --model-control explicit` (the default), then build again"


class ServerUnreachable(ConnectionError):
    """Nothing answers at the server's HTTP address."""

    fix = "start one with `plugserve serve --model-control explicit`, or pass --load the server's HTTP address"


class LoadRefused(RuntimeError):
    """The server answered a repository request with an error; `fix` says what to do about it,
    `said` is the server's own message."""

    def __init__(self, message: str, fix: str | None = None, said: str | None = None):
        super().__init__(message)
        self.fix = fix
        self.said = said


@dataclass
class LiveServer:
    """A running tritonserver by its HTTP address (host:port); `admin_key` for a restricted API."""

    url: str
    admin_key: str | None = None
    timeout_s: float = 120.0
    log: str | None = None  # the server's log file, when its serving record names it

    def _post(self, path: str, body: dict) -> str:
        """POST a JSON body; the answer's text. Refusals raise LoadRefused with the server's message."""
        headers = {ADMIN_HEADER: self.admin_key} if self.admin_key else {}
        request = urllib.request.Request(f"http://{self.url}{path}", data=json.dumps(body).encode(),
                                         method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                text = str(json.loads(text).get("error", text))
            text = " ".join(text.split())  # Triton's messages may span lines: one line for the terminal
            fix = _fix(text)
            if fix == EXPLICIT_FIX:  # Triton's words name polling for model control none too
                raise LoadRefused(f"the server at {self.url} runs with model control none or poll, which refuses "
                                  f"loads (it says: {text})", fix, text) from None
            raise LoadRefused(f"the server at {self.url} answered: {text}", fix, text) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(f"no server at {self.url} (http): {getattr(reason, 'strerror', None) or reason}"
                                    ) from None

    def loaded(self, states: tuple[str, ...] = HOLDING) -> dict[str, list[int]]:
        """Per model, its versions in one of `states` (by default those that hold their files), ascending."""
        found: dict[str, set[int]] = {}
        for entry in json.loads(self._post("/v2/repository/index", {}) or "[]"):
            if entry.get("state") in states and str(entry.get("version", "")).isdigit():
                found.setdefault(entry["name"], set()).add(int(entry["version"]))
        return {model: sorted(versions) for model, versions in found.items()}

    def load(self, model: str, config: dict, versions: list[int]) -> str | None:
        """Load `model` with `config` pinned to `versions`; the server's error, or None once loaded."""
        config = {**config, "version_policy": {"specific": {"versions": versions}},
                  "parameters": {**config.get("parameters", {}),
                                 GENERATION_PARAMETER: {"string_value": secrets.token_hex(6)}}}
        try:
            self._post(f"/v2/repository/models/{model}/load", {"parameters": {"config": json.dumps(config)}})
        except LoadRefused as error:
            if error.fix is not None:  # not the model's fault: the server refuses any load
                raise
            return error.said
        return None

    def check_loads(self) -> None:
        """Raise what a load would run into (no server, no admin key, model control none or poll)
        without loading anything: an unload of a model name no repository holds."""
        try:
            self._post(f"/v2/repository/models/{PROBE_MODEL}/unload", {})
        except LoadRefused as error:
            if error.fix is not None:  # a refusal about that model means loads are allowed
                raise

    def wait_unloaded(self, model: str, versions: list[int], timeout_s: float = 30.0) -> list[int]:
        """Wait until `model` holds only `versions` (those a load retired finish their requests and
        unload); the versions it holds at the end."""
        deadline = time.monotonic() + timeout_s
        while (held := self.loaded().get(model, [])) != sorted(versions) and time.monotonic() < deadline:
            time.sleep(0.2)
        return held

    def version_ready(self, model: str, version: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/models/{model}/versions/{version}/ready",
                                        timeout=self.timeout_s) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False


def _fix(text: str) -> str | None:
    """The way out of a refusal that no load can get past, or None for one about the model."""
    if "not allowed if polling is enabled" in text:  # Triton's words for model control none and poll
        return EXPLICIT_FIX
    if "restricted" in text:
        return (f"this server wants the header {ADMIN_HEADER}: build with --repository the repository "
                "`plugserve serve` serves, whose record holds the key")
    return None


def load_newest(server: LiveServer, model_dir: Path, *, force: bool = False, say: Callable[[str], None] = print,
                explain: Callable[[str], str] = lambda _model: "") -> tuple[list[int], list[str]]:
    """Load the newest verified versions of a model that its version policy serves, falling back to
    older ones while a load fails: (the versions loaded, [] when none could be; why each other was
    not). `explain(model)` adds to a failed load what the server's log said."""
    model = model_dir.name
    present = repository.versions(model_dir)
    candidates, reasons = [], []
    for version in reversed(present):
        problems = [] if force else repository.version_problems(model_dir, version, newest=version == present[-1])
        if problems:
            reasons.append(f"version {version} is not served: {'; '.join(problems)}")
            say(f"model {model} {reasons[-1]}")
        else:
            candidates.append(version)
    while candidates:
        config_path = repository.version_config(model_dir, candidates[0])
        error_text: str | None
        try:
            config = repository.to_dict(repository.read_config(config_path))
        except Exception as error:  # noqa: BLE001 - protobuf's ParseError and decoding errors alike
            error_text = f"{config_path}: {error}"
            chosen = candidates[:1]
        else:
            chosen = repository.policy_versions(config, sorted(candidates)) or candidates[:1]
            error_text = server.load(model, config, chosen)
            if error_text is None:
                return chosen, reasons
        reasons.append(f"version(s) {chosen} failed to load: {error_text}{explain(model)}")
        say(f"model {model} {reasons[-1]}")
        candidates = [v for v in candidates if v not in chosen]
    return [], reasons


def _address(url: str) -> tuple[str, int] | None:
    host, _, port = url.rpartition(":")
    try:
        return socket.gethostbyname(host.strip("[]") or "127.0.0.1"), int(port)
    except (OSError, ValueError):
        return None


def server_at(url: str, repository_dir: Path) -> LiveServer:
    """The server at `url` (host:port of its HTTP endpoint), with the admin key of the
    `plugserve serve` on `repository_dir` that listens there, if one does."""
    url = url.removeprefix("http://").rstrip("/")
    if ":" not in url:
        url += ":8000"
    wanted = _address(url)
    for _, record in repository.serving_records(repository_dir):
        if wanted is not None and _address(str(record.get("http", ""))) == wanted:
            return LiveServer(url, record.get("admin_key"), log=record.get("log"))
    return LiveServer(url)


def loaded_by_servers(repository_dir: Path) -> dict[str, dict[int, str]]:
    """Per model, the versions that the running `plugserve serve`s of a repository hold, each with
    the server that holds it. A server that does not answer is taken at its record's word."""
    found: dict[str, dict[int, str]] = {}
    for pid, record in repository.serving_records(repository_dir):
        who = f"the server of pid {pid}" + (f" at {record['http']}" if record.get("http") else "")
        loaded = {model: [int(v) for v in versions] for model, versions in record.get("loaded", {}).items()}
        with contextlib.suppress(ServerUnreachable, LoadRefused, ValueError):
            if record.get("http"):
                loaded = LiveServer(str(record["http"]), record.get("admin_key"), timeout_s=10).loaded()
        for model, versions in loaded.items():
            found.setdefault(model, {}).update(dict.fromkeys(versions, who))
    return found
