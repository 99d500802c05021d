"""Game days: a scenario's cluster kept running until `down`, with faults injected live.

`overcommit up` starts the driver of a run (`engine.run_scenario` with a `LiveControl`) as a
named Ray actor, `GameDayDriver`, in the namespace `overcommit-gameday` (detached unless the
day runs in the foreground), so the terminal that started it may close. The day advances
emulated time at a pace (`1x` = the wall clock) up to the scenario's `duration`, its horizon.
`inject` queues a timeline event for the next window boundary, `status` reads the last
window's snapshot, and `down` ends the run at the next boundary, runs the checkers and hands
back everything `run` writes; the caller writes the run directory.

Where each day runs is recorded in a state file, `NAME.json` under `$OVERCOMMIT_STATE_DIR`
(default `~/.overcommit/gameday`). Without `--address`, `up` starts a local Ray head of its
own (`ray start --head --block` in a new session, its temp dir under /tmp, recorded in
`ray.json`) that outlives `up`; `down` of the last day on it stops it.

While the day runs, its driver serves a live dashboard (`overcommit.dashboard`) on 127.0.0.1
of the driver's node, at a URL with a random token that `up` and `status` print; `down` stops
it with the day. On a day whose hosts are pinned one per Ray node (`runtime.pin: resource`),
`inject fail-host HOST --real` removes the host's Ray node (`overcommit.cluster.live.LiveNodes`).

A day's event log replays it: `events.jsonl` holds the run's events (injected ones with
`injected_by` and `wall_time`) and a last line `{"kind": "end", "t": ...}` with the emulated
time the day stopped, which `run --replay` takes as the duration.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from overcommit.cluster.live import LiveControl, LiveNodes, NodeError
from overcommit.config import EVENT_ACTIONS, Scenario
from overcommit.drill import with_replay

NAMESPACE = "overcommit-gameday"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
RAY_FILE = "ray.json"


class GameDayError(Exception):
    """A game-day command cannot do what was asked; the message is one line for the user."""


# -- where days are recorded ------------------------------------------------------------------
def state_dir() -> Path:
    """`$OVERCOMMIT_STATE_DIR`, or `~/.overcommit/gameday`."""
    env = os.environ.get("OVERCOMMIT_STATE_DIR")
    return Path(env) if env else Path.home() / ".overcommit" / "gameday"


def who() -> str:
    """user@host of this process."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise GameDayError(
            f"cluster name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)"
        )
    return name


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def recorded() -> dict[str, dict]:
    """Every day recorded in the state directory, by name."""
    out = {}
    d = state_dir()
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.name == RAY_FILE:
            continue
        data = _read(p)
        if data is not None and data.get("name") == p.stem:
            out[p.stem] = data
    return out


def record_of(name: str) -> dict:
    rec = recorded().get(name)
    if rec is None:
        running = ", ".join(recorded()) or "none"
        raise GameDayError(f"no cluster named {name!r} is up (running: {running})")
    return rec


def forget(name: str) -> None:
    (state_dir() / f"{name}.json").unlink(missing_ok=True)


# -- the local Ray head `up` starts when given no address ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def local_ray() -> dict | None:
    """The local head recorded in the state directory, if it still runs."""
    rec = _read(state_dir() / RAY_FILE)
    if rec is None or not _alive(rec["pid"]) or not _listening(rec["address"]):
        return None
    return rec


def start_local_ray(timeout: float = 60.0) -> dict:
    """Start a Ray head on 127.0.0.1 that outlives this process; record it in `ray.json`."""
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ocgd-", dir="/tmp")  # short: Ray's socket paths are long
    exe = Path(sys.executable).with_name("ray")
    ray_cmd = [str(exe)] if exe.exists() else [shutil.which("ray") or "ray"]
    ports = {
        "--dashboard-agent-listen-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    cmd = [
        *ray_cmd,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={tmp}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--num-cpus={os.cpu_count() or 2}",
        *(f"{k}={v}" for k, v in ports.items()),
    ]
    log = open(Path(tmp) / "ray-start.log", "wb")  # noqa: SIM115 - the child keeps it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"  # only holders of the user's Ray token may join
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    log.close()
    address = f"127.0.0.1:{port}"
    rec = {"pid": proc.pid, "address": address, "temp_dir": tmp, "started": _now()}
    end = time.monotonic() + timeout
    while not _listening(address):
        if proc.poll() is not None or time.monotonic() > end:
            tail = (Path(tmp) / "ray-start.log").read_text(errors="replace").strip()
            last = tail.splitlines()[-1] if tail else "no output"
            _stop_ray(rec)
            raise GameDayError(f"could not start a local Ray head: {last}")
        time.sleep(0.3)
    _write(state_dir() / RAY_FILE, rec)
    return rec


def _stop_ray(rec: dict, timeout: float = 30.0) -> None:
    pid = rec["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the session `up` started: the head and its children
    shutil.rmtree(rec["temp_dir"], ignore_errors=True)


def stop_local_ray_if_unused() -> bool:
    """Stop the recorded local head when no recorded day uses it any more."""
    path = state_dir() / RAY_FILE
    rec = _read(path)
    if rec is None or any(d.get("local_ray") for d in recorded().values()):
        return False
    _stop_ray(rec)
    path.unlink(missing_ok=True)
    return True


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- connecting --------------------------------------------------------------------------------
def _token_auth() -> None:
    """Talk to a head that `up` started with token authentication (the token is the user's,
    `~/.ray/auth_token`, which Ray creates)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    with contextlib.suppress(Exception):  # refresh Ray's cached config, as Ray itself does
        from ray._raylet import Config

        Config.initialize("")


@contextlib.contextmanager
def _quiet_fd2() -> Any:
    """Ray's C++ client logs connection retries straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


JOIN_ATTEMPTS = 3  # tries to join a Ray cluster before a day gives up


def connect(address: str, token: bool = False) -> Any:
    """Join the Ray cluster at `address` in the game days' namespace (quietly)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if not _listening(address.split("://", 1)[-1]) and not address.startswith("ray://"):
        raise GameDayError(f"cannot reach the Ray cluster at {address}")
    if token:
        _token_auth()
    from overcommit.cluster.ray_runtime import quiet_ray

    quiet_ray()  # the raylet's messages (a node marked dead) stay off stdout and --json
    # a cluster that has just started (or a loaded machine) may not answer the first join:
    # Ray's node lookup times out; a few tries before giving up
    for attempt in range(JOIN_ATTEMPTS):
        try:
            with contextlib.redirect_stderr(io.StringIO()), _quiet_fd2():
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
            return ray
        except (ConnectionError, RuntimeError) as exc:
            if ray.is_initialized():
                ray.shutdown()
            if attempt + 1 == JOIN_ATTEMPTS:
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                raise GameDayError(
                    f"cannot join the Ray cluster at {address}: {exc}{cause}"
                ) from None
            time.sleep(2.0)
        except Exception as exc:
            raise GameDayError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return ray


def driver(name: str) -> Any | None:
    """The running day's driver actor, or None."""
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def attach(name: str) -> tuple[dict, Any]:
    """(state record, driver actor) of a recorded day; a day whose driver is gone is
    forgotten (and its local Ray stopped if unused) and reported."""
    rec = record_of(check_name(name))
    try:
        connect(rec["address"], rec.get("local_ray", False))
        actor = driver(name)
    except GameDayError:
        actor = None
    if actor is None:
        forget(name)
        stop_local_ray_if_unused()
        raise GameDayError(f"cluster {name!r} is gone (its driver no longer runs); forgotten")
    return rec, actor


# -- the driver actor --------------------------------------------------------------------------
class GameDayDriver:
    """One game day's driver: the engine's loop in a thread, the commands' calls beside it."""

    def __init__(self, scenario: Scenario, name: str, pace: float | None, meta: dict) -> None:
        self.sc = scenario
        self.name = name
        self.meta = meta
        self.control = LiveControl(pace)
        pinned = scenario.runtime.pin == "resource"
        self.nodes = LiveNodes(self.control, scenario.host_names()) if pinned else None
        self.result: Any = None
        self.error: str | None = None
        self.exit_code: int | None = None
        self.done = threading.Event()
        self.dashboard: Any = None
        self.dashboard_error: str | None = None
        self._start_dashboard()
        self.thread = threading.Thread(target=self._main, name="gameday", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        from overcommit.cluster.engine import PreflightError, run_scenario
        from overcommit.cluster.runtime import InfrastructureError

        try:
            self.result = run_scenario(self.sc, live=self.control, real_faults=self.nodes)
        except (PreflightError, InfrastructureError) as exc:
            self.error = str(exc)
        except BaseException as exc:  # reported to the commands, never lost in a log
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def _start_dashboard(self) -> None:
        from overcommit.dashboard import Dashboard

        title = f"{self.name} · {self.sc.name}"
        try:
            self.dashboard = Dashboard(self._dashboard_data, title)
            self.dashboard.start()
        except Exception as exc:  # the day runs on without its page; status says why
            self.dashboard, self.dashboard_error = None, f"{type(exc).__name__}: {exc}"

    def _dashboard_data(self) -> dict:
        from overcommit.dashboard import data

        st = self.status(light=True)
        return data(self.control, self.sc, st, self.nodes)

    def ready(self, timeout: float = 300.0) -> dict:
        """Wait until the first window ran (or the start failed)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.done.is_set():
            if self.control.snapshot["epoch"] > 0:
                break
            time.sleep(0.1)
        return {
            "error": self.error,
            "epoch": self.control.snapshot["epoch"],
            "dashboard": self.dashboard.url if self.dashboard is not None else None,
            "dashboard_error": self.dashboard_error,
        }

    def status(self, light: bool = False) -> dict:
        """The last window's snapshot and the day's facts (`light`: without the per-host and
        per-guest tables and the processes, for the dashboard)."""
        snap = dict(self.control.snapshot)
        if light:
            snap = {k: v for k, v in snap.items() if k not in ("hosts", "guests")}
        if self.error is not None:
            state = "failed"
        elif self.done.is_set():
            state = "finished" if self.control.stopped_at is None else "stopped"
        else:
            state = "stopping" if self.control.stop_requested else "running"
        snap.update(
            name=self.name,
            state=state,
            error=self.error,
            scenario=self.sc.name,
            mechanism=self.sc.mechanism,
            seed=self.sc.seed,
            horizon=float(self.sc.duration),
            injections=list(self.control.applied),
            dashboard=self.dashboard.url if self.dashboard is not None else None,
            dashboard_error=self.dashboard_error,
            real_nodes_removed=list(self.nodes.removed) if self.nodes is not None else [],
            **self.meta,
        )
        if not light:
            snap["processes"] = self.processes()
        return snap

    def processes(self) -> dict:
        """The day's processes on their nodes: this driver and what it started (the shared
        storage's redis-server), each host actor and its redis-server."""
        import psutil

        me = psutil.Process()
        infos = getattr(self.control.runtime, "infos", None) or {}
        return {
            "driver": me.pid,
            "driver_children": [p.pid for p in me.children(recursive=True)],
            "hosts": {h: {"pid": i["pid"], "redis_pid": i["redis_pid"]} for h, i in infos.items()},
        }

    def inject(self, request: dict) -> dict:
        """Check an injection against the scenario and the cluster's state, then queue it for
        the next window boundary; `{"error": ...}` when it is refused (nothing queued)."""
        if self.done.is_set() or self.control.stop_requested:
            return {"error": f"cluster {self.name!r} is stopping; nothing injected"}
        try:
            event = make_event(self.sc, request, self.control.snapshot)
            if request.get("real"):
                if self.nodes is None:
                    raise GameDayError(
                        "fail-host --real needs the hosts pinned one per Ray node "
                        "(runtime.pin: resource; see docs/cluster.md)"
                    )
                self.nodes.node_of(event.target)
            if event.action == "recover_host" and self.nodes and event.target in self.nodes.removed:
                self.nodes.node_of(event.target, "recover-host")  # a node to start it on
        except (GameDayError, NodeError) as exc:
            return {"error": str(exc)}
        prov = {
            "action": event.action,
            "target": _target_text(event),
            "by": request.get("by") or "unknown",
            "wall_time": _now(),
        }
        if request.get("real"):
            prov["real"] = True
        self.control.inject(event, prov)
        return {"error": None, "queued": prov, "after_t": self.control.snapshot["t"]}

    def down(self, by: str, timeout: float = 600.0) -> dict:
        """End the day at the next window boundary; everything `run` writes, and the exit
        code."""
        self.control.request_stop({"by": by, "wall_time": _now()})
        if not self.done.wait(timeout):
            return {"error": f"the driver did not stop within {timeout:g}s"}
        if self.dashboard is not None:
            with contextlib.suppress(Exception):
                self.dashboard.stop()
        if self.error is not None:
            return {"error": self.error}
        return self._payload(by)

    def _payload(self, by: str) -> dict:
        r = self.result
        dt = float(self.sc.epoch)
        stopped = self.control.stopped_at
        epochs = stopped if stopped is not None else round(r.summary["emulated_seconds"] / dt)
        end = {
            "t": round(epochs * dt, 9),
            "epoch": epochs,
            "kind": "end",
            "reason": "down" if stopped is not None else "horizon",
            "by": by,
        }
        events = r.events if self.nodes is None else self.nodes.plain(r.events)
        plain = [{k: v for k, v in e.items() if k != "chaos"} for e in events]
        summary = dict(r.summary)
        summary["events"] = plain
        replayed = with_replay(self.sc, [*plain, end])
        summary["scenario"] = {k: v for k, v in replayed.to_json().items() if k != "runtime"}
        summary["run"] = {
            **summary["run"],
            "gameday": {"name": self.name, **self.meta, "ended": end["reason"], "ended_by": by},
            "injections": list(self.control.applied),
        }
        log = [dict(e) for e in events]
        for inj in self.control.applied:
            for e in log:
                if (
                    e["epoch"] == inj["epoch"]
                    and e["kind"] == inj["action"]
                    and "injected_by" not in e
                    and inj["target"] in (e.get("host"), e.get("guest"), None)
                ):
                    e["injected_by"] = inj["by"]
                    e["wall_time"] = inj["wall_time"]
                    if inj.get("real"):
                        e["real"] = True
                    break
        return {
            "error": None,
            "summary": summary,
            "guests": r.guests,
            "hosts": r.hosts,
            "log": [*log, end],
            "exit_code": r.exit_code,
        }


def _target_text(event: Any) -> str | None:
    t = event.target
    return t if isinstance(t, str) else None


def _kebab(action: str) -> str:
    return action.replace("_", "-")


#: The actions `inject` knows, as typed (the scenario file's, with dashes).
ACTIONS = tuple(_kebab(a) for a in EVENT_ACTIONS)


def make_event(sc: Scenario, req: dict, snap: dict) -> Any:
    """The timeline event an injection asks for, checked against the scenario and the
    cluster's last snapshot; raises GameDayError with one line."""
    from pydantic import ValidationError

    from overcommit.config.events import Event

    action = str(req.get("action", "")).replace("-", "_")
    if action not in EVENT_ACTIONS:
        raise GameDayError(f"unknown action {req.get('action')!r} (known: {', '.join(ACTIONS)})")
    kind = EVENT_ACTIONS[action]
    target = req.get("target")
    hosts = sc.host_names()
    guests = [g.name for g in sc.guest_specs()]
    up = {h: snap["hosts"].get(h, {}).get("up", True) for h in hosts}
    where = {g: snap["guests"].get(g, {}).get("host", "?") for g in guests}
    parts = sc.mechanism_parts()
    fields: dict[str, Any] = {}
    word = _kebab(action)
    if kind == "storage":
        if target is not None:
            raise GameDayError(f"{word} takes --factor and --duration, not {target!r}")
        fields[action] = {"factor": req.get("factor"), "duration": req.get("duration")}
        if None in fields[action].values():
            raise GameDayError(f"{word} needs --factor F (0 < F <= 1) and --duration D")
    elif target is None:
        raise GameDayError(f"{word} needs a {kind} name")
    elif kind == "host":
        if target not in hosts:
            raise GameDayError(f"{word}: unknown host {target!r} (hosts: {', '.join(hosts)})")
        if action == "recover_host":
            if up[target]:
                raise GameDayError(f"recover-host: {target} is up")
        elif not up[target]:
            raise GameDayError(f"{word}: {target} is down")
        fields[action] = target
    else:
        if target not in guests:
            raise GameDayError(f"{word}: unknown guest {target!r} (guests: {', '.join(guests)})")
        if where[target] is None:
            raise GameDayError(f"{word}: {target} is down")
        fields[action] = target
    if action.startswith("tmem_") and "frontswap" not in parts:
        raise GameDayError(f"{word}: mechanism {sc.mechanism} has no tmem pool")
    if action == "stop_cooperating":
        spec = next(g for g in sc.guest_specs() if g.name == target)
        if not spec.cooperative:
            raise GameDayError(f"stop-cooperating: {target} does not cooperate already")
    if action == "migrate":
        to = req.get("to")
        if to is None:
            raise GameDayError("migrate needs --to HOST, the destination")
        if to not in hosts:
            raise GameDayError(f"migrate: unknown host {to!r} (hosts: {', '.join(hosts)})")
        if not up[to]:
            raise GameDayError(f"migrate: the destination {to} is down")
        if where[target] == to:
            raise GameDayError(f"migrate: {target} already runs on {to}")
        fields["to"] = to
        if req.get("mode"):
            fields["mode"] = req["mode"]
    elif req.get("to") is not None:
        raise GameDayError(f"{word} takes no --to (only migrate does)")
    if req.get("real") and action not in ("fail_host",):
        raise GameDayError(f"--real applies to fail-host only, not {word}")
    try:
        return Event(at=0.0, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise GameDayError(f"{word}: {loc}: {first['msg']}") from None


# -- the commands' side ------------------------------------------------------------------------
def default_out(sc: Scenario, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{sc.mechanism}-s{sc.seed}-{stamp}"


def start_day(
    sc: Scenario,
    *,
    config: Path,
    name: str,
    address: str | None,
    pace: str,
    pace_value: float | None,
    out_dir: Path,
    foreground: bool,
    by: str,
) -> tuple[dict, Any]:
    """Start a day: a Ray to run on, the driver actor, the state record; waits for the first
    window. Returns (record, actor)."""
    check_name(name)
    sc = _with_ray_runtime(sc)
    if name in recorded():
        try:
            attach(name)  # a stale record is forgotten here
        except GameDayError:
            pass
        else:
            raise GameDayError(f"a cluster named {name!r} is already up (overcommit down {name})")
    local = address is None
    if local:
        ray_rec = local_ray() or start_local_ray()
        address = ray_rec["address"]
    assert address is not None
    rec = {
        "name": name,
        "address": address,
        "local_ray": local,
        "config": str(Path(config).resolve()),
        "out": str(Path(out_dir).resolve()),
        "pace": pace,
        "foreground": foreground,
        "started": _now(),
        "by": by,
    }
    path = state_dir() / f"{name}.json"
    try:
        connect(address, local)
        if driver(name) is not None:
            raise GameDayError(f"a cluster named {name!r} is already up on {address}")
        _write(path, rec)
    except GameDayError:
        if local:
            stop_local_ray_if_unused()
        raise
    import ray

    meta = {"pace": pace, "config": rec["config"], "address": address, "started_by": by}
    opts: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    node = _driver_node(sc.host_names())
    if node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    if not foreground:
        opts["lifetime"] = "detached"
    cls = ray.remote(num_cpus=0, max_concurrency=16, max_restarts=0)(GameDayDriver)
    try:
        actor = cls.options(**opts).remote(sc, name, pace_value, meta)
        ready = ray.get(actor.ready.remote())
    except Exception as exc:
        forget(name)
        if local:
            stop_local_ray_if_unused()
        raise GameDayError(f"could not start cluster {name!r}: {exc}") from None
    if ready["error"] is not None:
        stop_actor(actor)
        forget(name)
        if local:
            stop_local_ray_if_unused()
        raise GameDayError(f"cluster {name!r} did not start: {ready['error']}")
    rec["dashboard"] = ready["dashboard"]
    rec["dashboard_error"] = ready["dashboard_error"]
    _write(path, rec)
    return rec, actor


def _driver_node(hosts: list[str]) -> str | None:
    """The Ray node for a day's driver (and its dashboard): one that holds no host's custom
    resource, so that `inject --real` never removes it; the node `up` joined through when it
    is one, else the head node. None: any node (no such node)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    free = [
        n
        for n in ray.nodes()
        if n.get("Alive") and not any(n.get("Resources", {}).get(h, 0) > 0 for h in hosts)
    ]
    for n in free:
        if n["NodeID"] == here:
            return here
    for n in free:
        if "node:__internal_head__" in n.get("Resources", {}):
            return n["NodeID"]
    return free[0]["NodeID"] if free else None


def _with_ray_runtime(sc: Scenario) -> Scenario:
    """A day runs its hosts and guests as Ray actors (the scenario's placement otherwise)."""
    if sc.runtime.kind == "ray":
        return sc
    from overcommit.config import apply_overrides

    return apply_overrides(sc, {"runtime.kind": "ray"})


def stop_actor(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


def end_day(name: str, rec: dict, actor: Any, by: str) -> dict:
    """`down`: stop at the next window boundary, take the results, kill the driver, forget
    the day (and stop the local Ray if it was the last day on it). Returns the payload."""
    import ray

    try:
        payload = ray.get(actor.down.remote(by))
    except Exception as exc:
        payload = {"error": f"the driver failed: {exc}"}
    stop_actor(actor)
    _await_gone(name)
    forget(name)
    with contextlib.suppress(Exception):
        ray.shutdown()
    if rec.get("local_ray"):
        stop_local_ray_if_unused()
    return payload


def _await_gone(name: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and driver(name) is not None:
        time.sleep(0.2)


def write_day(payload: dict, out_dir: Path) -> None:
    """The run directory, as `run` writes it (events.jsonl is the day's log)."""
    from overcommit.output import write_run_dir

    write_run_dir(out_dir, payload["summary"], payload["guests"], payload["hosts"], payload["log"])


def status_of(name: str) -> dict:
    rec, actor = attach(name)
    import ray

    return ray.get(actor.status.remote())


def list_days() -> list[dict]:
    """One line of facts per recorded day (its driver asked when reachable)."""
    out = []
    for name, rec in recorded().items():
        row = {
            "name": name,
            "address": rec["address"],
            "config": rec["config"],
            "pace": rec["pace"],
        }
        try:
            connect(rec["address"], rec.get("local_ray", False))
            actor = driver(name)
            if actor is None:
                row["state"] = "gone"
            else:
                import ray

                st = ray.get(actor.status.remote(), timeout=30)
                row.update(state=st["state"], t=st["t"], horizon=st["horizon"])
                row.update(mechanism=st["mechanism"], valid=st["checks"]["valid"])
        except Exception:
            row["state"] = "unreachable"
        out.append(row)
    return out
