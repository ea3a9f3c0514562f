"""`WorkerProcessCollector`: the `process_*` figures of the recorded, live workers, by pid, from
a fake /proc (and once from the real one, for this process)."""

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apiforge.http import metrics
from apiforge.http.processes import WorkerProcessCollector, record_path

SERVER = 100
PAGE = os.sysconf("SC_PAGE_SIZE")


def _process(proc: Path, pid: int, *, start: int, ppid: int = SERVER, state: str = "S") -> None:
    """A /proc/<pid> with a stat (utime 300, stime 100 ticks; 4096 virtual bytes; 5 pages
    resident), limits and three descriptors."""
    fields = [state, str(ppid), *["0"] * 9, "300", "100", *["0"] * 6, str(start), "4096", "5"]
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} (apiforge (w) 1) {' '.join(fields)} 0 0\n")
    (proc / str(pid) / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            1024                 4096                 files\n"
    )
    for fd in range(3):
        (proc / str(pid) / "fd" / str(fd)).touch()


def _scrape(directory: Path, proc: Path) -> dict[str, dict[str, float]]:
    """sample name -> pid -> value, of the `process_*` samples."""
    registry = CollectorRegistry()
    registry.register(WorkerProcessCollector(str(directory), proc=proc, parent=lambda: SERVER))
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels["pid"]] = sample.value
    return found


def _fake(tmp_path: Path) -> tuple[Path, Path]:
    directory, proc = tmp_path / "metrics", tmp_path / "proc"
    directory.mkdir()
    proc.mkdir()
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    return directory, proc


def test_each_recorded_live_worker_is_reported_with_its_pid(tmp_path: Path) -> None:
    directory, proc = _fake(tmp_path)
    for pid in (201, 202):
        _process(proc, pid, start=5000)
        (directory / f"worker-{pid}-5000").touch()
    (directory / "counter_201.db").touch()  # prometheus-client's files are no records

    found = _scrape(directory, proc)

    ticks = os.sysconf("SC_CLK_TCK")
    for label in ("201", "202"):
        assert found["process_resident_memory_bytes"][label] == 5 * PAGE
        assert found["process_virtual_memory_bytes"][label] == 4096
        assert found["process_open_fds"][label] == 3
        assert found["process_max_fds"][label] == 1024
        assert found["process_cpu_seconds_total"][label] == 400 / ticks
        assert found["process_start_time_seconds"][label] == 1700000000 + 5000 / ticks
    assert {pid for samples in found.values() for pid in samples} == {"201", "202"}


def test_a_dead_zombie_or_reused_pid_is_left_out_and_its_record_removed(tmp_path: Path) -> None:
    directory, proc = _fake(tmp_path)
    _process(proc, 201, start=5000)
    _process(proc, 202, start=9999)  # 202 exited; an unrelated process got its pid back
    _process(proc, 203, start=5000, state="Z")  # exited, not reaped yet
    for pid in (201, 202, 203, 204):  # 204: exited and reaped
        (directory / f"worker-{pid}-5000").touch()

    found = _scrape(directory, proc)

    assert set(found["process_resident_memory_bytes"]) == {"201"}
    assert sorted(path.name for path in directory.iterdir()) == ["worker-201-5000"]


def test_a_process_of_another_parent_is_left_out(tmp_path: Path) -> None:
    directory, proc = _fake(tmp_path)
    _process(proc, 201, start=5000)
    _process(proc, 202, start=5000, ppid=1)
    for pid in (201, 202):
        (directory / f"worker-{pid}-5000").touch()

    assert set(_scrape(directory, proc)["process_open_fds"]) == {"201"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_this_process_is_read_from_the_real_proc(tmp_path: Path) -> None:
    record = record_path(str(tmp_path))
    assert record is not None
    record.touch()
    registry = CollectorRegistry()
    registry.register(WorkerProcessCollector(str(tmp_path)))

    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }

    for name in ("process_resident_memory_bytes", "process_open_fds"):
        (sample,) = families[name].samples
        assert sample.labels == {"pid": str(os.getpid())}
        assert sample.value > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_one_process_reports_its_own_figures_without_a_pid() -> None:
    families = {
        family.name: family for family in text_string_to_metric_families(metrics.render().decode())
    }

    for name in ("process_resident_memory_bytes", "process_open_fds"):
        (sample,) = families[name].samples
        assert sample.labels == {}
        assert sample.value > 0
    assert "python_gc_objects_collected" in families
