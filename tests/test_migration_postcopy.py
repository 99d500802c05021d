"""Post-copy (inline): the pages left at the source live in the source host's Redis until a
remote fault or the push reads them from there; tampering with them is caught; a source failure
loses exactly them; nothing is left behind."""

from __future__ import annotations

import numpy as np
import pytest
from test_migration import PRECOPY

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides, load_scenario_text
from overcommit.stores.codec import decode, encode, make_batch
from overcommit.stores.postcopy import remote_key


def postcopy(extra: str = "", duration: int = 8, bw: int = 128):
    """One guest writing 40k pages/s migrates post-copy from host-1 to host-2 at 1 s (20 ms
    epochs): round 1 ends near 5.1 s at 128 MiB/s (3.1 s at 256), then faults and the push."""
    text = PRECOPY.format(seed=1, duration=duration, bw=bw, auto="true", rate=40000) + extra
    return apply_overrides(load_scenario_text(text, "p.yaml"), {"migration.mode": "postcopy"})


def key(sc) -> str:
    return remote_key(sc.redis.prefix, "vm", 0)


def evalsha_calls(client) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_faults_and_pushes_read_the_pages_from_the_source_store():
    sc = postcopy()
    seen: dict[int, tuple] = {}

    def look(e, runtime, fleet):
        src, dst = fleet.host("host-1").client(), fleet.host("host-2").client()
        seen[e] = (src.hlen(key(sc)), evalsha_calls(src), dst.exists(key(sc)))

    r = run_scenario(sc, on_window=look)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "completed" and m["remote_faults"] > 0
    during = [e for e in sorted(seen) if seen[e][0] > 0]
    assert len(during) > 5  # the pages stayed at the source for several epochs
    sizes = [seen[e][0] for e in during]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # pushed
    assert not any(seen[e][2] for e in seen)  # never in the destination's store
    # after the switch host-1 runs no guest: every script it served is a post-copy read
    calls = [seen[e][1] for e in during]
    assert all(b > a for a, b in zip(calls, calls[1:]))
    # every page sent after the switch was read from the source's store, and no hash is left
    assert m["remote_pages_read"] == m["pages_resent"] > sizes[0]
    assert seen[max(seen)][0] == 0 and m["remote_pages_lost"] == 0


@pytest.mark.parametrize("tamper", ["corrupt", "remove"])
def test_a_tampered_page_at_the_source_is_caught_when_it_is_read(tamper):
    sc = postcopy()
    done: dict = {}

    def look(e, runtime, fleet):
        c = fleet.host("host-1").client()
        if done or c.hlen(key(sc)) == 0:
            return
        field, rec = max(c.hgetall(key(sc)).items())  # the push reads it last
        if tamper == "remove":
            c.hdel(key(sc), field)
        else:  # a well-formed record of the page at another version
            b = decode("vm", rec, sc.payload, sc.page_size)
            wrong = make_batch("vm", b.pages, b.versions + 1, sc.payload, sc.page_size, 0.5)
            c.hset(key(sc), field, encode("vm", wrong, sc.payload, sc.page_size))
        done["page"] = int.from_bytes(field, "big")

    r = run_scenario(sc, on_window=look)
    assert "page" in done
    checks = r.summary["checks"]
    assert not r.summary["valid"]
    check = "no_missing_pages" if tamper == "remove" else "integrity"
    assert checks[check]["violations"] >= 1
    text = " ".join(checks[check]["evidence"])
    assert "post-copy pages at host-1" in text and f"page {done['page']}" in text


def test_a_source_failure_during_postcopy_loses_exactly_the_remote_pages():
    sc = postcopy("  - {at: 3.5s, fail_host: host-1}\n", duration=6, bw=256)
    fail = int(round(3.5 / 0.02))
    seen: dict = {}

    def look(e, runtime, fleet):
        if e == fail:  # the window before the failure: what the source's store holds
            seen["held"] = fleet.host("host-1").client().hlen(key(sc))

    r = run_scenario(sc, on_window=look)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "lost: a host failed during post-copy"
    assert seen["held"] > 0 and m["remote_pages_lost"] == seen["held"]
    crash = next(e for e in r.events if e["kind"] == "guest_crash" and e["guest"] == "vm")
    assert crash["reason"] == "post-copy source failed"
    assert crash["remote_pages_lost"] == seen["held"]
    assert r.summary["totals"]["guests_crashed"] == 1


def test_a_destination_failure_during_postcopy_leaves_nothing_at_the_source():
    sc = postcopy("  - {at: 3.5s, fail_host: host-2}\n", duration=5, bw=256)
    fail = int(round(3.5 / 0.02))
    seen: dict = {}

    def look(e, runtime, fleet):
        c = fleet.host("host-1").client()
        seen[e] = c.exists(key(sc))

    r = run_scenario(sc, on_window=look)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "lost: a host failed during post-copy" and m["remote_pages_lost"] == 0
    after = min(e for e in seen if e > fail)
    assert seen[fail] and not seen[after]  # dropped with the failure


def test_a_page_added_to_the_source_store_is_caught_by_the_checker():
    """A record of a page that is not remote appears in the source's store once it is small
    enough to be read back whole every epoch: the checker names it."""
    from overcommit.cluster.migrating import remote

    sc = postcopy()
    done: dict = {}
    small = remote.FULL_CHECK_BYTES // 24  # digest records of "vm" are 24 bytes

    def look(e, runtime, fleet):
        c = fleet.host("host-1").client()
        n = c.hlen(key(sc))
        if done or n == 0 or n > small // 2:
            return
        held = {int.from_bytes(f, "big") for f in c.hkeys(key(sc))}
        page = next(p for p in range(1000, 10**6) if p not in held)
        rec = make_batch("vm", np.array([page]), np.array([1]), sc.payload, sc.page_size, 0.5)
        c.hset(key(sc), page.to_bytes(4, "big"), encode("vm", rec, sc.payload, sc.page_size))
        done["page"] = page

    r = run_scenario(sc, on_window=look)
    assert "page" in done and not r.summary["valid"]
    ev = " ".join(r.summary["checks"]["integrity"]["evidence"])
    assert f"no longer remote, e.g. page {done['page']}" in ev, ev
    assert "still to move" in ev  # and the count after the reads


def test_a_run_that_ends_in_postcopy_checks_the_whole_source_store():
    """The run ends while pages are still at the source: the final read-back compares the
    source's store with the remote pages (one removed page shows)."""
    sc = postcopy(duration=6)
    held: dict = {}

    def look(e, runtime, fleet):
        c = fleet.host("host-1").client()
        if e == 299:  # the last window's start: take one page away for the final check
            field = max(c.hkeys(key(sc)))  # the push goes in page order: this one last
            c.hdel(key(sc), field)
            held["page"] = int.from_bytes(field, "big")

    r = run_scenario(sc, on_window=look)
    ev = r.summary["checks"]["integrity"]["evidence"]
    assert any(
        "remote page(s) are not in the post-copy pages at host-1" in x and f"{held['page']}" in x
        for x in ev
    ), ev


def test_a_source_store_failure_during_postcopy_loses_the_remote_pages_in_place():
    """host-1's Redis dies and restarts empty while host-1 lives: the pages the guest left
    there are gone, so the guest crashes on host-2 and reboots there."""
    sc = postcopy("  - {at: 3.5s, tmem_backend_failure: host-1}\n", duration=6, bw=256)
    fail = int(round(3.5 / 0.02))
    seen: dict = {}

    def look(e, runtime, fleet):
        if e == fail:
            seen["held"] = fleet.host("host-1").client().hlen(key(sc))

    r = run_scenario(sc, on_window=look)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "lost: the source's store failed in post-copy"
    assert seen["held"] > 0 and m["remote_pages_lost"] == seen["held"]
    crash = next(e for e in r.events if e["kind"] == "guest_crash")
    assert crash["host"] == "host-2" and crash["remote_pages_lost"] == seen["held"]
    assert r.summary["guests"]["vm"]["incarnation"] == 1
    assert r.summary["guests"]["vm"]["host"] == "host-2"


def test_full_payload_pages_cross_through_the_source_store_intact():
    """With `payload: full` the records at the source are the pages themselves: each one read
    back is checked against the content its version implies."""
    from test_migration import mech

    sc = mech("frontswap", duration="6s", **{"migration.mode": "postcopy", "payload": "full"})
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "completed"
    assert m["remote_pages_read"] == m["pages_resent"] > 1000
