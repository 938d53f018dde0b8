"""A real ipykernel driven through jupyter_client, for kernel-level tests."""

from __future__ import annotations

import ast
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.manager import KernelManager

SESSION_END_PROBE = """
from daglite.plugins.hooks.markers import hook_impl
from daglite.plugins.manager import register_plugins

class SessionEndProbe:
    @hook_impl
    def after_session_end(self, session_id, duration):
        open("session-ended", "w").write(str(session_id))

register_plugins(SessionEndProbe())
"""
"""A cell that leaves the file `session-ended` behind when daglite's session is exited."""


GATE = """
import os as _os, time as _time
from daglite import task as _task

def arrive(tag):
    open(f"arrived-{tag}-{_os.getpid()}-{_time.monotonic_ns()}", "w").close()

def gate():
    while not _os.path.exists("open"):
        _time.sleep(0.005)

@_task
def held(x):
    arrive("held")
    gate()
    return x
"""
"""Kernel code for tasks the test holds: `held(x)` marks its start with a file `arrived-held-*`
in the kernel's working directory, then waits until the test creates the file `open`."""


def arrivals(directory: Path, tag: str = "held") -> int:
    """How many tasks marked their start with `arrive(tag)` (see `GATE`) in *directory*."""
    return len(list(directory.glob(f"arrived-{tag}-*")))


def open_gate(directory: Path) -> None:
    """Let every task held at `gate()` (see `GATE`) in *directory* go on."""
    (directory / "open").touch()


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Wait until *condition()* is true and return it; fail after a generous *timeout*."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)
    return value


BACKGROUND_MAP = (
    "import contextvars, threading\n"
    "threading.Thread(target=contextvars.copy_context().run,"
    " args=(map_tasks, held, range(8)), daemon=True).start()"
)
"""A cell that maps `held` (see `GATE`) on a thread of its own, so the kernel stays free."""


@dataclass
class CellResult:
    """Everything a cell sent on iopub, plus its reply."""

    reply: dict[str, Any]
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    comm_msgs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    @property
    def text(self) -> str:
        """stdout, stderr, the error and every text/plain output, in one string."""
        plain = [o.get("data", {}).get("text/plain", "") for o in self.outputs]
        error = f"{self.error['ename']}: {self.error['evalue']}" if self.error else ""
        return "\n".join([self.stdout, self.stderr, error, *plain])


class Kernel:
    """A running kernel and a client connected to it."""

    def __init__(self, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=cwd, env={**os.environ, **(env or {})})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.comm_log: list[dict[str, Any]] = []
        self.iopub: list[dict[str, Any]] = []
        """Every iopub message read so far, whichever cell it belongs to."""
        self.pid = int(self.eval("__import__('os').getpid()"))

    # region Cells

    def run(self, code: str, timeout: float = 60, wait: bool = True) -> CellResult | str:
        """Execute *code*; return what it sent (or only its msg_id when *wait* is false)."""
        msg_id = self.client.execute(code, allow_stdin=False)
        return self.collect(msg_id, timeout) if wait else msg_id

    def collect(self, msg_id: str, timeout: float = 60) -> CellResult:
        """Gather the iopub messages of *msg_id* until the kernel is idle, then its reply."""
        deadline = time.monotonic() + timeout
        result = CellResult(reply={})
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell {msg_id} did not finish in {timeout} s")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            self._log(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("execute_result", "display_data", "update_display_data"):
                result.outputs.append(content)
            elif kind == "error":
                result.error = content
            elif kind == "comm_msg":
                result.comm_msgs.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                break
        result.reply = self.client.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        while result.reply["parent_header"].get("msg_id") != msg_id:
            result.reply = self.client.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        return result

    def ok(self, code: str, timeout: float = 60) -> CellResult:
        """Execute *code* and fail the test if it raised."""
        result = self.run(code, timeout)
        assert result.ok, result.text
        return result

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate *expression* in the kernel and return its value (a Python literal)."""
        result = self.ok(f"print(repr({expression}))", timeout)
        return ast.literal_eval(result.stdout.strip().splitlines()[-1])

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        """Wait, in the kernel, until *expression* is true; fail after a generous *timeout*."""
        self.ok(
            "import time as _t\n"
            f"_deadline = _t.monotonic() + {timeout}\n"
            f"while not ({expression}):\n"
            f"    assert _t.monotonic() < _deadline, {'timed out waiting for ' + expression!r}\n"
            "    _t.sleep(0.01)",
            timeout=timeout + 30,
        )

    def wait_for_update(
        self,
        model_id: str | None,
        condition: Callable[[dict[str, Any]], Any],
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Read iopub until widget *model_id* (None: any) got a state update meeting *condition*.

        Returns:
            The first such update.
        """
        deadline = time.monotonic() + timeout
        while True:
            for state in self.updates(model_id):
                if condition(state):
                    return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no update of widget {model_id} met the condition in time")
            try:
                self._log(self.client.get_iopub_msg(timeout=remaining))
            except queue.Empty:
                pass

    def _read_iopub_until(self, condition: Callable[[dict[str, Any]], bool]) -> None:
        deadline = time.monotonic() + 60
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                return
            self._log(msg)
            if condition(msg):
                return

    def updates(self, model_id: str | None) -> list[dict[str, Any]]:
        """The states sent so far to the widget *model_id* (None: to any widget): the one it
        was opened with, then every update."""
        return [
            m["data"]["state"]
            for m in self.comm_log
            if model_id in (None, m["comm_id"])
            and (m["data"].get("method") == "update" or "target_name" in m)
        ]

    def wait_for_message(
        self, condition: Callable[[dict[str, Any]], Any], timeout: float = 60.0
    ) -> dict[str, Any]:
        """Read iopub until some message (of any cell, read before or now) meets *condition*."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for msg in self.iopub[seen:]:
                if condition(msg):
                    return msg
            seen = len(self.iopub)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no iopub message met the condition in time")
            try:
                self._log(self.client.get_iopub_msg(timeout=remaining))
            except queue.Empty:
                pass

    def _log(self, msg: dict[str, Any]) -> None:
        self.iopub.append(msg)
        if msg["msg_type"] in ("comm_msg", "comm_open"):
            self.comm_log.append(msg["content"])

    def send_comm(self, comm_id: str, data: dict[str, Any]) -> None:
        """Send a comm message to the kernel exactly as a frontend does."""
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.shell_channel.send(msg)

    # region Lifecycle

    def descendants(self) -> list[psutil.Process]:
        """Running child processes of the kernel (recursively; zombies do not count)."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [child for child in children if _running(child.pid)]

    def shutdown(self, restart: bool = False) -> None:
        """Ask the kernel to shut down (or restart) the way a frontend does."""
        if restart:
            self.manager.restart_kernel(now=False)
            # What the old kernel sent before it exited, up to its shutdown broadcast (waiting
            # for the new kernel discards iopub).
            self._read_iopub_until(lambda msg: msg["msg_type"] == "shutdown_reply")
            self.client.wait_for_ready(timeout=60)
            self.pid = int(self.eval("__import__('os').getpid()"))
        else:
            self.client.stop_channels()
            self.manager.shutdown_kernel(now=False)

    def close(self) -> None:
        """Stop the client and make sure the kernel process is gone."""
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of *pids* runs (zombies count as gone); return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(pid: int) -> None:
    """SIGKILL *pid* alone (not its process group)."""
    os.kill(pid, 9)
