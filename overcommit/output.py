"""The run directory: summary.json, time series (Parquet and CSV), the event log.

Every file is written whole: to a temporary name in the same directory, flushed, then renamed,
so an interrupted run leaves complete files or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import pandas as pd

FILES = {
    "summary.json": "the run's result (schema overcommit.summary/1)",
    "guests.parquet": "per guest and epoch time series (also guests.csv)",
    "hosts.parquet": "per host and epoch time series (also hosts.csv)",
    "events.jsonl": "the event log, one JSON object per line, in emulated-time order",
}


def atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Write `path` through a temporary file in its directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def write_events(path: Path, events: list[dict]) -> None:
    atomic_write(path, lambda f: f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in events))


def write_table(
    out_dir: Path, stem: str, table: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]]
) -> None:
    """`stem`.parquet and `stem`.csv from a frame, or from a callable giving the table's rows
    as consecutive frames: each chunk is built once and written to both files (the same CSV
    text, the same parquet table in several row groups)."""
    chunks = table if callable(table) else (lambda: [table])

    def both(pf: IO[Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        def csv(cf: IO[Any]) -> None:
            writer = None
            for i, chunk in enumerate(chunks()):
                t = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(pf, t.schema)
                writer.write_table(t)
                chunk.to_csv(cf, index=False, header=i == 0)
            if writer is not None:
                writer.close()

        atomic_write(out_dir / f"{stem}.csv", csv)

    atomic_write(out_dir / f"{stem}.parquet", both, binary=True)


def write_run_dir(
    out_dir: Path,
    summary: dict,
    guests: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]],
    hosts: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]],
    events: list[dict],
) -> None:
    """Write a complete run directory (the summary last, so its presence means complete)."""
    write_events(out_dir / "events.jsonl", events)
    write_table(out_dir, "guests", guests)
    write_table(out_dir, "hosts", hosts)
    write_json(out_dir / "summary.json", summary)
