"""/metrics on a live server with 2 workers: process metrics for every live worker (label pid)
checked against /proc read here, the build-info metric, and request counts still summed over
the workers (prometheus_client's multiprocess mode)."""
from __future__ import annotations

import os
import platform
import signal
import time

import pytest
from conftest import ServerProcess, stop_cleanly
from prometheus_client.parser import text_string_to_metric_families

import tradestats

PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                   "process_start_time_seconds")
#: --server for each server kind of conftest.SERVER_KIND_ARGS.
SERVER_NAMES = {"granian": "granian", "meinheld": "gunicorn"}


@pytest.fixture(scope="module", params=["granian", "meinheld"])
def two_workers(request, tmp_path_factory):
    if request.param == "meinheld":
        pytest.importorskip("meinheld")
    log_path = tmp_path_factory.mktemp("metrics") / "serve.log"
    server = ServerProcess(request.param, ("--workers", "2", "--max-k", "1"), log_path)
    server.started_at = time.time()
    yield server
    stop_cleanly(server)


def scrape(server: ServerProcess) -> dict[str, list]:
    """Sample name -> its samples, from one scrape on a fresh connection (any worker)."""
    reply = server.request("GET", "/metrics")
    assert reply.status == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def by_pid(samples: dict[str, list], name: str) -> dict[int, float]:
    return {int(sample.labels["pid"]): sample.value for sample in samples[name]}


def proc_stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def boot_time() -> float:
    with open("/proc/stat") as stat:
        return float(next(line for line in stat if line.startswith("btime")).split()[1])


def wait_for(condition, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(step)
    return condition()


def test_process_metrics_for_every_worker_match_proc(two_workers):
    """A worker is reported once it has built its app (its metrics files exist): right after
    start-up that may take a moment."""
    workers = set(two_workers.worker_pids())
    assert len(workers) == 2

    def scrape_with_every_worker():
        samples = scrape(two_workers)
        return samples if set(by_pid(samples, "process_open_fds")) == workers else None

    samples = wait_for(scrape_with_every_worker)
    assert samples, by_pid(scrape(two_workers), "process_open_fds")
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for name in PROCESS_METRICS:
        assert set(by_pid(samples, name)) == workers, name   # the workers, not the master
        assert all(set(sample.labels) == {"pid"} for sample in samples[name])
    for pid in workers:
        stat = proc_stat(pid)   # fields from the state on: stat[0] is field 3 of proc(5)
        started = boot_time() + int(stat[19]) / ticks
        assert by_pid(samples, "process_start_time_seconds")[pid] == pytest.approx(started,
                                                                                  abs=0.02)
        assert two_workers.started_at - 5 < started <= time.time()
        cpu = (int(stat[11]) + int(stat[12])) / ticks
        assert 0 < by_pid(samples, "process_cpu_seconds_total")[pid] <= cpu + 0.05
        rss = int(stat[21]) * page
        assert by_pid(samples, "process_resident_memory_bytes")[pid] == pytest.approx(rss,
                                                                                     rel=0.25)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        assert abs(by_pid(samples, "process_open_fds")[pid] - fds) <= 4


def test_cpu_seconds_grow_with_work(two_workers):
    before = sum(by_pid(scrape(two_workers), "process_cpu_seconds_total").values())
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        two_workers.request("GET", "/metrics")
    after = sum(by_pid(scrape(two_workers), "process_cpu_seconds_total").values())
    assert after > before + 0.1


def test_a_replaced_worker_is_reported_and_the_killed_one_is_not(two_workers):
    if two_workers.kind != "granian":
        pytest.skip("granian's respawn is what this server relies on; gunicorn's is its own")
    killed = two_workers.worker_pids()[0]
    os.kill(killed, signal.SIGKILL)
    replaced = wait_for(lambda: len(two_workers.worker_pids()) == 2
                        and killed not in two_workers.worker_pids())
    assert replaced
    workers = set(two_workers.worker_pids())

    def reported() -> bool:
        return set(by_pid(scrape(two_workers), "process_open_fds")) == workers

    assert wait_for(reported), (workers, by_pid(scrape(two_workers), "process_open_fds"))


def test_build_info_names_version_python_and_server(two_workers):
    for _ in range(4):   # whichever worker answers
        info = scrape(two_workers)["tradestats_build_info"]
        assert [(sample.labels, sample.value) for sample in info] == [
            ({"version": tradestats.__version__, "python": platform.python_version(),
              "server": SERVER_NAMES[two_workers.kind]}, 1.0)]


def test_request_counts_are_still_summed_over_the_workers(two_workers):
    """Fresh connections land on both workers; any worker's scrape counts them all."""
    def health_count() -> float:
        return sum(sample.value for sample in scrape(two_workers).get(
            "tradestats_http_requests_total", [])
            if sample.labels["route"] == "/health" and sample.labels["status"] == "200")

    before = health_count()
    for _ in range(40):
        assert two_workers.request("GET", "/health").status == 200
    assert wait_for(lambda: health_count() == before + 40, timeout=5)
