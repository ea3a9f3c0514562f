"""The `process_*` metrics of every live worker of a `--workers N` server, labelled `pid`.

A worker can read another's memory, CPU time and descriptors from /proc, but not which pids are
its fellow workers, nor tell one of them from an unrelated process that got a dead worker's pid
back. So each worker records itself in the server's metrics directory when it starts, as an empty
file `worker-<pid>-<start>` (`start`: its start time in clock ticks since boot, field 22 of
/proc/<pid>/stat; no `.db` suffix, so prometheus-client's collector never reads it), and removes
it when it exits. A scrape reports a recorded pid only while /proc/<pid>/stat shows the same start
time, a live (not zombie) process and the scraping worker's own parent (the server). A record that
can no longer match (its process gone, a zombie, or the pid reused) is removed: a worker killed
outright leaves its record, and a crash loop would otherwise make every scrape slower.

The figures are prometheus-client's own (`ProcessCollector`: same names, help and units as one
process reports), read per pid and given a `pid` label. A few /proc reads per worker per scrape.
"""

import contextlib
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

_PREFIX = "worker-"


def _stat(proc: Path, pid: int | str) -> tuple[str, int, int]:
    """(state, parent pid, start time in clock ticks) of `pid`, from /proc/<pid>/stat."""
    text = (proc / str(pid) / "stat").read_bytes()
    # "pid (comm) state ppid ...": the command name may hold spaces and parentheses.
    fields = text.rpartition(b")")[2].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def record_path(directory: str, proc: Path = Path("/proc")) -> Path | None:
    """This process's record in `directory` (None where there is no /proc to read)."""
    try:
        start = _stat(proc, "self")[2]
    except (OSError, IndexError, ValueError):
        return None
    return Path(directory) / f"{_PREFIX}{os.getpid()}-{start}"


class WorkerProcessCollector(Collector):
    """The process figures of the workers recorded in `directory`, each sample labelled `pid`.

    `parent` gives the server's pid (the scraping worker's parent); `proc` is where /proc is
    (tests pass a directory of fake files)."""

    def __init__(
        self,
        directory: str,
        proc: Path = Path("/proc"),
        parent: Callable[[], int] = os.getppid,
    ) -> None:
        self._directory = Path(directory)
        self._proc = proc
        self._parent = parent
        # pid -> its reader: a ProcessCollector reads /proc/stat once when built. Replaced whole
        # by each scrape (scrapes may run in several threads at once), so a dead pid's goes too.
        self._readers: dict[int, ProcessCollector] = {}

    def _live_workers(self) -> list[int]:
        """The recorded pids that are still the processes that recorded them; stale records go."""
        live: list[int] = []
        try:
            names = [entry.name for entry in os.scandir(self._directory)]
        except OSError:
            return live
        parent = self._parent()
        for name in names:
            pid_text, _, start_text = name.removeprefix(_PREFIX).partition("-")
            if not name.startswith(_PREFIX) or not pid_text.isdigit() or not start_text.isdigit():
                continue
            try:
                state, ppid, start = _stat(self._proc, pid_text)
            except FileNotFoundError:  # exited and reaped
                state, ppid, start = "X", 0, -1
            except (OSError, IndexError, ValueError):  # unreadable: maybe live, keep the record
                continue
            if start != int(start_text) or state in {"Z", "X"}:
                with contextlib.suppress(FileNotFoundError):  # another scrape was first
                    (self._directory / name).unlink()
            elif ppid == parent:
                live.append(int(pid_text))
        return sorted(live)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        readers: dict[int, ProcessCollector] = {}
        for pid in self._live_workers():
            reader = self._readers.get(pid) or ProcessCollector(
                pid=functools.partial(int, pid),  # a callable giving `pid`
                proc=str(self._proc),
                registry=None,
            )
            readers[pid] = reader
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        self._readers = readers
        return list(families.values())
