"""Many store operations in lockstep: one pipeline per Redis server per step.

Store operations are generators that yield `(target, Eval | Command)` and receive the reply
(the tmem and swap adapters are written that way). When a host runs its guests' epochs side by
side, each guest's batch is one such operation; running them one after another costs a round
trip per guest, while `run_lockstep` sends the current request of every operation to the same
server in one pipeline (EVALSHA of already-loaded scripts, no MULTI), then advances them all.
Replies come back in request order, so the outcome is the same as running them one by one:
the operations of one step touch disjoint keys (one guest each) and Lua scripts are atomic.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import Any

from overcommit.stores.tmem import Command, Eval, ScriptRunner, lua_source

Plan = Generator[tuple[Hashable, "Eval | Command"], Any, Any]


def _sha(runner: ScriptRunner, name: str) -> str:
    """SHA of a script, loaded on the runner's server once."""
    loaded = runner.__dict__.setdefault("_loaded", {})
    if name not in loaded:
        loaded[name] = runner.client.script_load(lua_source(name))
    return loaded[name]


async def _sha_async(runner: ScriptRunner, name: str) -> str:
    loaded = runner.__dict__.setdefault("_loaded", {})
    if name not in loaded:
        loaded[name] = await runner.client.script_load(lua_source(name))
    return loaded[name]


def _queue(pipe: Any, request: Eval | Command, sha: str | None) -> None:
    if isinstance(request, Eval):
        pipe.evalsha(sha, len(request.keys), *request.keys, *request.args)
    else:
        pipe.execute_command(*request.args)


def _start(plans: list[Plan], results: list[Any]) -> dict[int, tuple[Hashable, Any]]:
    current = {}
    for i, plan in enumerate(plans):
        try:
            current[i] = next(plan)
        except StopIteration as done:
            results[i] = done.value
    return current


def _advance(
    plans: list[Plan], current: dict[int, Any], replies: dict[int, Any], results: list[Any]
) -> dict[int, Any]:
    nxt = {}
    for i in current:
        try:
            nxt[i] = plans[i].send(replies[i])
        except StopIteration as done:
            results[i] = done.value
    return nxt


def _groups(current: dict[int, tuple[Hashable, Any]]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, (target, _) in current.items():
        groups.setdefault(target, []).append(i)
    return groups


def run_lockstep(runners: dict[Hashable, ScriptRunner], plans: list[Plan]) -> list[Any]:
    """Run `plans` over synchronous clients; returns their results in order."""
    results: list[Any] = [None] * len(plans)
    current = _start(plans, results)
    while current:
        replies: dict[int, Any] = {}
        for target, idxs in _groups(current).items():
            runner = runners[target]
            if len(idxs) == 1:  # no pipeline for a lone request
                i = idxs[0]
                req = current[i][1]
                if isinstance(req, Eval):
                    sha = _sha(runner, req.script)
                    replies[i] = runner.client.evalsha(sha, len(req.keys), *req.keys, *req.args)
                else:
                    replies[i] = runner.client.execute_command(*req.args)
                continue
            pipe = runner.client.pipeline(transaction=False)
            for i in idxs:
                req = current[i][1]
                sha = _sha(runner, req.script) if isinstance(req, Eval) else None
                _queue(pipe, req, sha)
            for i, reply in zip(idxs, pipe.execute()):
                replies[i] = reply
        current = _advance(plans, current, replies, results)
    return results


async def run_lockstep_async(runners: dict[Hashable, ScriptRunner], plans: list[Plan]) -> list[Any]:
    """`run_lockstep` over redis-py asyncio clients."""
    results: list[Any] = [None] * len(plans)
    current = _start(plans, results)
    while current:
        replies: dict[int, Any] = {}
        for target, idxs in _groups(current).items():
            runner = runners[target]
            pipe = runner.client.pipeline(transaction=False)
            for i in idxs:
                req = current[i][1]
                sha = await _sha_async(runner, req.script) if isinstance(req, Eval) else None
                _queue(pipe, req, sha)
            for i, reply in zip(idxs, await pipe.execute()):
                replies[i] = reply
        current = _advance(plans, current, replies, results)
    return results


def targeted(target: Hashable, op: Generator[Any, Any, Any]) -> Plan:
    """Tag every request of a single-server operation with its target."""
    try:
        req = next(op)
        while True:
            req = op.send((yield target, req))
    except StopIteration as done:
        return done.value
