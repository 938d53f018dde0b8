"""The dask backend in a real kernel: a local cluster of two workers, and an external cluster."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from daglite.exceptions import BackendError

from kernel import SESSION_END_PROBE
from kernel import kill
from kernel import wait_gone

TASKS = """
import os, time
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def square(x):
    return x * x

@task(dataset="square-{map_index}")
def saved_square(x):
    return x * x

@task
def nap(seconds, mark=None):
    if mark:
        open(mark, "w").close()
    time.sleep(seconds)
    return seconds

@task
def hold(mark):
    open(mark, "w").close()
    while not os.path.exists("gate"):
        time.sleep(0.01)
    return mark

@task
def boom(x):
    raise ValueError(f"bad input {x}")

def left_to_run(dask_scheduler):
    done = ("memory", "erred", "released", "forgotten")
    return [key for key, ts in dask_scheduler.tasks.items() if ts.state not in done]

def dask_backend():
    return dnb.session.current().backend_instance("dask")

def worker_names():
    workers = dask_backend().client.scheduler_info()["workers"].values()
    return sorted(str(worker["name"]) for worker in workers)
"""


def _until(kernel, condition: str, timeout: float = 60) -> None:
    """Wait in the kernel until the expression *condition* holds; fail after *timeout* s."""
    kernel.ok(
        f"deadline = time.monotonic() + {timeout}\n"
        f"while not ({condition}):\n"
        f"    assert time.monotonic() < deadline, {condition!r}\n"
        "    time.sleep(0.01)",
        timeout=timeout + 30,
    )


def _wait_for_files(directory, pattern: str, count: int, timeout: float = 60) -> None:
    """Wait until *count* files matching *pattern* exist in *directory*."""
    deadline = time.monotonic() + timeout
    while len(list(directory.glob(pattern))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} files {pattern} in {timeout} s"
        time.sleep(0.01)


def _keep_workers_busy(kernel, tmp_path) -> None:
    """Run `map_tasks` of `hold` on a thread of the kernel, until both workers hold a task."""
    kernel.ok(
        "import contextvars, threading\n"
        "threading.Thread(target=contextvars.copy_context().run,"
        " args=(map_tasks, hold, [f'busy-{i}' for i in range(8)]), daemon=True).start()"
    )
    _wait_for_files(tmp_path, "busy-*", 2)


def _start_dask(kernel, options: str = "--dask-workers 2") -> list[int]:
    """Open a session on a local cluster of two workers; return the cluster's process ids."""
    kernel.ok(TASKS)
    kernel.ok(f"%daglite start --backend dask {options}")
    assert kernel.eval("worker_names()") == ["0", "1"]
    return [process.pid for process in kernel.descendants()]


# region Registration


def test_dask_is_listed_from_its_entry_point_and_imported_only_when_used(kernel):
    rows = kernel.ok("%daglite backends").text.splitlines()
    dask_row = next(row for row in rows if row.split()[:1] == ["dask"])
    assert dask_row.split()[1:] == ["-", "entry", "point", "daglite_nb.dask:DaskBackend"]
    assert kernel.eval("'distributed' in __import__('sys').modules") is False


def test_without_distributed_dask_is_unavailable_with_an_install_hint(kernel):
    kernel.ok("import sys; sys.modules['distributed'] = None")
    assert "dask" not in kernel.ok("%daglite backends").text
    result = kernel.run("%daglite start --backend dask")
    assert not result.ok
    assert "UsageError: Backend 'dask' is not available" in result.stderr
    assert "pip install 'daglite-nb[dask]'" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "dask_workers must be a positive integer, got 0."),
        ({"threads": "2"}, "dask_threads must be a positive integer, got '2'."),
        ({"address": 8786}, "dask_address must be a string, got 8786."),
        ({"address": "tcp://h:1", "workers": 2}, "they cannot be combined with dask_address."),
    ],
)
def test_configure_rejects_bad_options(options, message):
    from daglite_nb.dask import DaskBackend

    with pytest.raises(ValueError, match=re.escape(message)):
        DaskBackend.configure(**options)


def test_configure_binds_options_to_a_subclass():
    from daglite_nb.dask import DaskBackend

    configured = DaskBackend.configure(address="tcp://127.0.0.1:8786")
    assert issubclass(configured, DaskBackend) and configured.name == "dask"
    assert configured.options.address == "tcp://127.0.0.1:8786"
    assert DaskBackend.options.address is None


# region Local cluster


def test_map_live_states_cancel_and_failure_on_a_local_cluster(kernel, tmp_path):
    pids = _start_dask(kernel, f"--dask-workers 2 --dataset-store {tmp_path / 'data'}")
    assert kernel.eval("map_tasks(square, range(300))") == [x * x for x in range(300)]
    # map_index reaches the workers: dataset keys are templated with it.
    assert kernel.eval("map_tasks(saved_square, range(5))") == [0, 1, 4, 9, 16]
    assert sorted(os.listdir(tmp_path / "data")) == [f"square-{i}" for i in range(5)]

    kernel.ok("futs = [dnb.submit(hold, f'ran-{i}') for i in range(3)]")
    _until(kernel, "{f.state for f in futs[:2]} == {'running'}")
    kernel.ok("states = [f.state for f in futs]\ncancelled = [futs[0].cancel(), futs[2].cancel()]")
    assert kernel.eval("states") == ["running", "running", "pending"]
    assert kernel.eval("cancelled") == [False, True]  # a running task cannot be cancelled
    (tmp_path / "gate").touch()
    assert kernel.eval("[f.result() for f in futs[:2]]") == ["ran-0", "ran-1"]
    assert kernel.eval("sorted(f.worker for f in futs[:2])") == ["0", "1"]
    assert kernel.eval("[f.state for f in futs]") == ["finished", "finished", "cancelled"]
    _until(kernel, "not dask_backend().client.run_on_scheduler(left_to_run)")
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == ["ran-0", "ran-1"]  # Dask forgot it

    kernel.ok("bad = dnb.submit(boom, 3)")
    assert kernel.eval("repr(bad.exception())") == "ValueError('bad input 3')"
    assert kernel.eval("bad.state") == "failed"

    info = kernel.eval("dask_backend().describe()")
    assert info["workers"] == "2" and info["cluster"] == "local"
    assert info["dashboard"].startswith("http://127.0.0.1:")

    status = kernel.ok("%daglite status").text
    assert "dask:" in status and "dashboard http://127.0.0.1:" in status and "workers 2" in status
    kernel.ok("panel = dnb.panel()")
    _until(kernel, "'workers 2' in panel.details.value")
    details = kernel.eval("panel.details.value")
    assert '<a href="http://127.0.0.1:' in details and "workers 2" in details

    assert "daglite session stopped" in kernel.ok("%daglite stop").stdout
    assert wait_gone(pids, timeout=5) == []


LOGGED = """
import logging

class Logged(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())

logged = []  # what Dask logs: printed from a background thread, it would land in some cell
logging.getLogger("distributed").addHandler(Logged(logging.WARNING))
"""


def _unsendable(kind: str) -> str:
    """The repr of the error of a call of `square` whose argument is of an unpicklable *kind*."""
    reason = f"cannot pickle {kind!r} object"
    return repr(TypeError(f"Dask cannot send square(...) to its workers: {reason}."))


def test_a_call_dask_cannot_send_fails_at_once_and_later_calls_work(kernel):
    _start_dask(kernel)
    kernel.ok(LOGGED)
    kernel.ok(
        "import threading\n"
        "locked = dnb.submit(square, threading.Lock())\n"
        "mixed = dnb.map(square, [1, (i for i in range(3)), 3])"
    )
    # 60 s: far longer than any send takes; the future of a lost call never settles.
    assert kernel.eval("repr(locked.exception(timeout=60))", timeout=90) == _unsendable(
        "_thread.lock"
    )
    assert kernel.eval("[repr(f.exception(timeout=60)) for f in mixed]", timeout=90) == [
        "None",
        _unsendable("generator"),
        "None",
    ]
    assert kernel.eval("[mixed[0].result(), mixed[2].result()]") == [1, 9]
    result = kernel.run("map_tasks(square, [2, threading.Lock()])", timeout=90)
    assert result.error and repr(TypeError(result.error["evalue"])) == _unsendable("_thread.lock")
    assert kernel.eval("logged") == []

    # A result Dask cannot send back fails its own call only (Dask's client logs it, though).
    kernel.ok(
        "@task\n"
        "def generator_at(x):\n"
        "    return (i for i in range(x)) if x == 2 else x\n"
        "returned = dnb.map(generator_at, [1, 2, 3])"
    )
    unreturnable = "Dask could not return the result of generator_at(...): " + (
        "Could not serialize object of type generator."
    )
    assert kernel.eval("[repr(f.exception(timeout=60)) for f in returned]", timeout=90) == [
        "None",
        repr(BackendError(unreturnable)),
        "None",
    ]
    assert kernel.eval("map_tasks(square, range(10))") == [x * x for x in range(10)]
    bridge = "sorted(t.name for t in threading.enumerate() if t.name.startswith('daglite-nb-dask'))"
    assert kernel.eval(bridge) == ["daglite-nb-dask-collect", "daglite-nb-dask-submit"]


def test_only_loopback_listens(kernel):
    _start_dask(kernel)
    listening = [
        connection.laddr.ip
        for process in [psutil.Process(kernel.pid), *kernel.descendants()]
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    ]
    # scheduler, dashboard, two nannies, two workers and their dashboards, at least
    assert len(listening) >= 8
    assert set(listening) <= {"127.0.0.1", "::1"}


def test_interrupt_cancels_pending_and_workers_keep_running(kernel, tmp_path):
    pids = _start_dask(kernel)
    msg_id = kernel.run("results = map_tasks(hold, [f'held-{i}' for i in range(20)])", wait=False)
    kernel.wait_for_update(None, lambda u: "/20</b> done" in str(u.get("value")))  # all submitted
    _wait_for_files(tmp_path, "held-*", 2)  # both workers hold a task: 18 calls are pending
    kernel.manager.interrupt_kernel()
    interrupted = kernel.collect(msg_id, timeout=60)
    assert interrupted.error and interrupted.error["ename"] == "KeyboardInterrupt"
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert counts["cancelled"] == 18, counts
    (tmp_path / "gate").touch()
    assert kernel.eval("map_tasks(nap, [0.1] * 4)") == [0.1] * 4
    assert sorted(p.pid for p in kernel.descendants()) == sorted(pids)


@pytest.mark.parametrize("how", ["shutdown", "restart"])
def test_shutdown_and_restart_tear_down_the_cluster(kernel, tmp_path, how):
    kernel.ok(SESSION_END_PROBE)
    pids = _start_dask(kernel)
    _keep_workers_busy(kernel, tmp_path)
    kernel.shutdown(restart=how == "restart")
    assert wait_gone(pids, timeout=5) == []
    assert (tmp_path / "session-ended").exists()  # our teardown ran; the kernel was not killed


def test_sigkill_of_the_kernel_leaves_no_cluster_process(kernel, tmp_path):
    pids = _start_dask(kernel)
    _keep_workers_busy(kernel, tmp_path)
    kill(kernel.pid)
    assert wait_gone(pids, timeout=5) == []


# region Starting


HOLD_AT_START = """
import os, sys, time
print(f"worker {os.getpid()} waits for the gate", file=sys.stderr, flush=True)
open(os.path.join(DIRECTORY, f"starting-{os.getpid()}"), "w").close()
while not os.path.exists(os.path.join(DIRECTORY, "gate")):
    time.sleep(0.01)
"""
"""A Dask worker preload that holds the worker's start until DIRECTORY/gate exists."""


def _hold_worker_starts(kernel, tmp_path) -> None:
    """Make the workers of local clusters started from now on wait for `tmp_path / "gate"`."""
    preload = tmp_path / "hold_at_start.py"
    preload.write_text(f"DIRECTORY = {str(tmp_path)!r}\n{HOLD_AT_START}")
    kernel.ok(
        f"import os; os.environ['DASK_DISTRIBUTED__WORKER__PRELOAD'] = {str([str(preload)])!r}"
    )


@pytest.mark.parametrize("how", ["sigkill", "restart"])
def test_the_kernel_ending_while_the_cluster_starts_leaves_no_cluster_process(
    kernel, tmp_path, how
):
    _hold_worker_starts(kernel, tmp_path)
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend thread --dask-workers 2")
    kernel.ok(  # a map on a thread of its own is the first to use dask
        "import contextvars, threading\n"
        "threading.Thread(target=contextvars.copy_context().run, args=(map_tasks, square, [1]),"
        " kwargs={'backend': 'dask'}, daemon=True).start()"
    )
    _wait_for_files(tmp_path, "starting-*", 2)
    pids = [process.pid for process in kernel.descendants()]
    assert len(pids) >= 4  # the helper, its resource tracker, two workers (and more)
    if how == "sigkill":
        kill(kernel.pid)
    else:
        kernel.manager.restart_kernel(now=False)  # returns once the kernel is gone
    assert wait_gone(pids, timeout=5) == []


LOWER_STALL_LIMIT = """
import glob, threading
import daglite_nb.dask

def lower_when_held():
    while len(glob.glob("starting-*")) < 2:
        time.sleep(0.01)
    daglite_nb.dask.START_STALL_SECONDS = 1

threading.Thread(target=lower_when_held, daemon=True).start()
"""
"""A cell that lowers the stall limit of a start to 1 s once both workers are held."""


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("stalled", "its helper logged nothing for 1 s."),
        ("killed", "its helper was killed by SIGKILL."),
    ],
)
def test_a_cluster_that_does_not_start_says_why_and_leaves_no_process(
    kernel, tmp_path, how, reason
):
    kernel.ok("import time")
    if how == "stalled":
        kernel.ok(LOWER_STALL_LIMIT)
    _hold_worker_starts(kernel, tmp_path)
    msg_id = kernel.run("%daglite start --backend dask --dask-workers 2", wait=False)
    _wait_for_files(tmp_path, "starting-*", 2)
    pids = [process.pid for process in kernel.descendants()]
    if how == "killed":
        kill(psutil.Process(kernel.pid).children()[0].pid)  # the helper
    result = kernel.collect(msg_id, timeout=120)
    assert not result.ok
    error = "UsageError: Backend 'dask' could not start: The local Dask cluster did not start: "
    assert result.stderr.startswith(f"{error}{reason}\nIts log ends:\n"), result.stderr
    assert "waits for the gate" in result.stderr  # what the workers logged
    assert wait_gone(pids, timeout=5) == []
    assert kernel.eval("__import__('daglite_nb').session.current()") is None


# region External cluster


@pytest.fixture
def external_cluster(tmp_path):
    """A scheduler and a worker started as `dask scheduler` / `dask worker` processes."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    scheduler = _cli("dask_scheduler", "--port", "0", "--scheduler-file", scheduler_file, *loopback)
    address = _wait_for_address(scheduler_file)
    worker = _cli("dask_worker", address, "--nworkers", "1", "--nthreads", "2", *loopback)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=30)
    yield address, [scheduler, worker]
    for process in (worker, scheduler):
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def _cli(command: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"distributed.cli.{command}", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for_address(scheduler_file, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(scheduler_file.read_text())["address"]
        assert time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.01)


def test_connects_to_an_external_cluster_and_leaves_it_running(kernel, external_cluster):
    from distributed import Client

    address, processes = external_cluster
    kernel.ok(TASKS)
    kernel.ok(f"%daglite start --backend dask --dask-address {address}")
    assert kernel.eval("map_tasks(square, range(50))") == [x * x for x in range(50)]
    kernel.ok("fut = dnb.submit(nap, 0.5)")
    assert kernel.eval("(fut.result(), fut.state)") == (0.5, "finished")
    assert kernel.eval("fut.worker") is not None
    info = kernel.eval("dask_backend().describe()")
    assert info["cluster"] == "connected" and info["scheduler"] == address
    assert info["workers"] == "1" and info["threads"] == "2"
    assert [p.cmdline() for p in kernel.descendants()] == []  # no cluster of our own

    kernel.ok("%daglite stop")
    assert all(process.poll() is None for process in processes)
    with Client(address, timeout=10) as client:
        assert client.submit(lambda: 41 + 1).result(timeout=10) == 42
