"""`%daglite` and `%%daglite`: parse the arguments, call the Python API, show the result."""

from __future__ import annotations

import argparse
import ast
from typing import Any
from typing import NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.core.magic import line_cell_magic
from IPython.core.magic import magics_class

import daglite_nb


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports mistakes as `UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message[0].upper()}{message[1:]}; see %daglite --help.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown


class _HelpShown(Exception):
    """Raised after `--help` printed the usage."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fixed_width(prog: str) -> argparse.HelpFormatter:
    # The same help at every terminal width, so notebooks that show it stay comparable.
    return argparse.HelpFormatter(prog, width=88)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `%daglite`; its help is the magic's documentation."""
    parser = _Parser(
        prog="%daglite",
        formatter_class=_fixed_width,
        description="Run daglite tasks from a notebook: one session for the whole kernel.",
        epilog="As a cell magic, `%%daglite --backend NAME` runs the cell with NAME as the "
        "default backend and restores the previous default afterwards.",
    )
    parser.add_argument(
        "--backend", dest="cell_backend", metavar="NAME", help="(%%%%daglite) backend for this cell"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    start = commands.add_parser("start", help="open the kernel's daglite session")
    start.add_argument("--backend", metavar="NAME", help="default backend (default: thread)")
    start.add_argument("--cache-store", metavar="PATH", help="cache store directory")
    start.add_argument("--dataset-store", metavar="PATH", help="dataset store directory")
    start.add_argument("--max-threads", metavar="N", type=_positive_int, help="thread pool size")
    start.add_argument("--max-processes", metavar="N", type=_positive_int, help="process pool size")
    start.add_argument(
        "--process-start-method",
        metavar="METHOD",
        help="process: how workers start (fork, spawn or forkserver; default: daglite's choice)",
    )
    start.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="dask: connect to this scheduler instead of starting a local cluster",
    )
    start.add_argument(
        "--dask-workers", metavar="N", type=_positive_int, help="dask: local cluster workers"
    )
    start.add_argument(
        "--dask-threads", metavar="N", type=_positive_int, help="dask: threads per local worker"
    )
    start.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="do not show a progress bar for map_tasks calls",
    )

    use = commands.add_parser("use", help="switch the session's default backend")
    use.add_argument("name", help="backend name or alias (see %%daglite backends)")

    submit = commands.add_parser(
        "submit", help="submit a task call and return its LiveFuture: submit task(1, y=2)"
    )
    submit.add_argument("--backend", metavar="NAME", help="backend for this call")
    submit.add_argument("call", nargs=argparse.REMAINDER, help="a call, e.g. task_fn(1, y=2)")

    restart = commands.add_parser(
        "restart", help="stop a backend and start it afresh (pending tasks are cancelled)"
    )
    restart.add_argument("name", nargs="?", help="backend name or alias (default: the session's)")

    commands.add_parser("panel", help="show the panel: watch the session, switch backends")
    commands.add_parser("status", help="show the session: backend, state, uptime")
    commands.add_parser("backends", help="list every usable backend; the active one is marked")
    commands.add_parser("stop", help="end the session: cancel pending tasks, stop backends")
    return parser


@magics_class
class DagliteMagics(Magics):
    """The `%daglite` line magic and `%%daglite` cell magic."""

    parser = build_parser()

    @line_cell_magic
    def daglite(self, line: str, cell: str | None = None) -> Any:  # noqa: D102
        if cell is None and line.split(maxsplit=1)[:1] == ["submit"]:
            return self._submit(line.split(maxsplit=1)[1:])
        try:
            args = self.parser.parse_args(_split(line))
        except _HelpShown:
            return None
        if cell is not None:
            return self._run_cell(args, cell)
        if args.cell_backend:
            raise UsageError("--backend alone is for the cell magic: %%daglite --backend NAME.")
        if args.command is None:
            raise UsageError(
                "Name a command: start, use, submit, restart, panel, status, backends or stop; "
                "see %daglite --help."
            )
        return getattr(self, f"_{args.command}")(args)

    daglite.__doc__ = parser.format_help()

    def _start(self, args: argparse.Namespace) -> None:
        daglite_nb.start(
            backend=args.backend,
            cache_store=args.cache_store,
            dataset_store=args.dataset_store,
            max_threads=args.max_threads,
            max_processes=args.max_processes,
            progress=args.progress,
            process_start_method=args.process_start_method,
            dask_address=args.dask_address,
            dask_workers=args.dask_workers,
            dask_threads=args.dask_threads,
        )
        print(f"daglite session started (backend: {daglite_nb.status().backend})")

    def _use(self, args: argparse.Namespace) -> None:
        print(f"default backend: {daglite_nb.use(args.name)}")

    def _submit(self, rest: list[str]) -> Any:
        """Evaluate `[--backend NAME] task(args...)` in the user's namespace and submit it."""
        source = rest[0].strip() if rest else ""
        backend = None
        if source.startswith(("-h", "--help")):
            try:
                self.parser.parse_args(["submit", "--help"])
            except _HelpShown:
                return None
        if source.startswith("--backend"):
            _, backend, source = [*source.split(maxsplit=2), "", ""][:3]
        task, args, kwargs = _evaluate_call(source, self.shell.user_ns)
        return daglite_nb.submit(task, *args, backend=backend or None, **kwargs)

    def _restart(self, args: argparse.Namespace) -> None:
        print(f"restarted backend: {daglite_nb.restart(args.name)}")

    def _panel(self, args: argparse.Namespace) -> Any:
        return daglite_nb.panel()

    def _status(self, args: argparse.Namespace) -> Any:
        return daglite_nb.status()

    def _backends(self, args: argparse.Namespace) -> Any:
        return daglite_nb.list_backends()

    def _stop(self, args: argparse.Namespace) -> None:
        daglite_nb.stop()
        print("daglite session stopped")

    def _run_cell(self, args: argparse.Namespace, cell: str) -> None:
        if args.command is not None or not args.cell_backend:
            raise UsageError(
                "The cell magic takes only --backend NAME: %%daglite --backend thread."
            )
        with daglite_nb.using(args.cell_backend):
            self.shell.run_cell(cell)


def _evaluate_call(source: str, namespace: dict[str, Any]) -> tuple[Any, tuple, dict]:
    """Evaluate the callee and the arguments of the call *source*, without calling it."""
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call):
        raise UsageError(f"submit takes a call such as task_fn(1, y=2), not {source!r}.")
    pack = ast.Call(
        ast.Name("__daglite_nb_pack__", ast.Load()), [call.func, *call.args], call.keywords
    )
    code = compile(ast.fix_missing_locations(ast.Expression(pack)), "<%daglite submit>", "eval")
    try:
        return eval(code, namespace, {"__daglite_nb_pack__": lambda f, *a, **k: (f, a, k)})
    except Exception as exc:
        raise UsageError(f"Cannot evaluate {source!r}: {type(exc).__name__}: {exc}.") from None


def _split(line: str) -> list[str]:
    import shlex

    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"Cannot read the arguments: {exc}.") from None
