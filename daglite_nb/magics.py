"""`%daglite` and `%%daglite`: parse the arguments, call the Python API, show the result.

How a line is read:

- `submit [--backend NAME] CALL`: the rest of the line is Python. It is split into words by
  Python's tokenizer (comments dropped, strings and brackets kept whole) and is not expanded.
- every other command, and the cell magic's line: shell-like words (`shlex`), after IPython's
  usual `$name` / `{expression}` expansion; an unquoted `#` starts a comment.

Either way the words go through the same argparse parser, whose help is the magic's documentation.
"""

from __future__ import annotations

import argparse
import ast
import io
import itertools
import re
import shlex
import tokenize
from collections import ChainMap
from typing import Any
from typing import NoReturn
from typing import cast

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics
from IPython.core.magic import line_cell_magic
from IPython.core.magic import magics_class
from IPython.core.magic import needs_local_scope
from IPython.core.magic import no_var_expand
from IPython.utils.text import DollarFormatter
from traitlets import Bool
from traitlets import Unicode

import daglite_nb
from daglite_nb._text import excerpt
from daglite_nb._text import reason
from daglite_nb._text import shorten
from daglite_nb._text import shorten_words

# region Parser


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports mistakes as `UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        message = shorten_words(message)
        raise UsageError(f"{message[0].upper()}{message[1:]}; see %daglite --help.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown


class _HelpShown(Exception):
    """Raised after `--help` printed the usage."""


def _hint(args: argparse.Namespace, extra: list[str]) -> str:
    """What to do about the arguments *extra* that the command of *args* does not take."""
    if args.command == "start" and len(extra) == 1:
        from daglite_nb.backends import registry  # imports daglite: only for this mistake

        if registry.knows(extra[0]):
            return f"name the backend with %daglite start --backend {extra[0]}"
    return "see %daglite --help"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {excerpt(text)}")
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
        default=None,
        help="do not show a progress bar for map_tasks calls",
    )
    start.add_argument(
        "--echo-output",
        action=argparse.BooleanOptionalAction,
        help="echo what tasks print into their cell, labelled (default: when there is no progress)",
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


# region Magics


@magics_class
class DagliteMagics(Magics):
    """The `%daglite` line magic and `%%daglite` cell magic.

    Its traits are the defaults of `%daglite start` and `dnb.start()` that people set once, with
    `%config DagliteMagics.default_backend = "process"` or in an IPython profile.
    """

    parser = build_parser()

    default_backend = Unicode(
        "thread", help="The session's default backend when a start names none."
    ).tag(config=True)
    progress = Bool(
        True, help="Whether map_tasks calls show a progress bar when a start does not say."
    ).tag(config=True)

    @property
    def _ipython(self) -> InteractiveShell:
        """The shell the magics are registered with (set once they are loaded)."""
        return cast(InteractiveShell, self.shell)

    @line_cell_magic
    @no_var_expand
    @needs_local_scope
    def daglite(  # noqa: D102
        self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None
    ) -> Any:
        namespace = self._ipython.user_ns if local_ns is None else local_ns
        try:
            args, extra = self.parser.parse_known_args(self._words(line, namespace))
        except _HelpShown:
            return None
        if extra:
            raise UsageError(
                f"Unrecognized arguments: {shorten(shlex.join(extra))}; {_hint(args, extra)}."
            )
        if cell is not None:
            return self._run_cell(args, cell)
        if args.cell_backend:
            raise UsageError("--backend alone is for the cell magic: %%daglite --backend NAME.")
        if args.command is None:
            raise UsageError(
                "Name a command: start, use, submit, restart, panel, status, backends or stop; "
                "see %daglite --help."
            )
        if args.command == "submit":
            return self._submit(args, namespace)
        return getattr(self, f"_{args.command}")(args)

    daglite.__doc__ = parser.format_help()

    def _words(self, line: str, namespace: dict[str, Any]) -> list[str]:
        """Split *line* into the parser's words: Python for `submit`, shell-like otherwise."""
        submit = _SUBMIT.match(line)
        if submit:
            return ["submit", *_python_words(line[submit.end() :])]
        return _shell_words(_expand(line, self._ipython.user_ns, namespace))

    def _start(self, args: argparse.Namespace) -> None:
        daglite_nb.start(
            backend=args.backend,
            cache_store=args.cache_store,
            dataset_store=args.dataset_store,
            max_threads=args.max_threads,
            max_processes=args.max_processes,
            progress=args.progress,
            echo_output=args.echo_output,
            process_start_method=args.process_start_method,
            dask_address=args.dask_address,
            dask_workers=args.dask_workers,
            dask_threads=args.dask_threads,
        )
        print(f"daglite session started (backend: {daglite_nb.status().backend})")

    def _use(self, args: argparse.Namespace) -> None:
        print(f"default backend: {daglite_nb.use(args.name)}")

    def _submit(self, args: argparse.Namespace, namespace: dict[str, Any]) -> Any:
        """Evaluate the call's callee and arguments in the user's namespace and submit it."""
        code = _compile_call(" ".join(args.call))
        try:
            task, call_args, kwargs = eval(
                code, self._ipython.user_ns, ChainMap({_PACK: _pack}, namespace)
            )
        except Exception as exc:
            raise UsageError(
                f"Cannot evaluate {excerpt(' '.join(args.call))}: "
                f"{type(exc).__name__}: {reason(exc)}."
            ) from None
        return daglite_nb.submit(task, *call_args, backend=args.backend, **kwargs)

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
            self._ipython.run_cell(cell)


# region Reading lines

_SUBMIT = re.compile(r"\s*submit(?![^\s#])")
"""A line whose command is `submit` (followed by a space, a comment or nothing)."""

_NOT_WORDS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}

_FORMATTER = DollarFormatter()

EXPANDED_CHARS = 1_000
"""The longest line that gets IPython's expansion: its formatter takes time quadratic in length."""


def _expand(line: str, user_ns: dict[str, Any], local_ns: dict[str, Any]) -> str:
    """Expand `$name` and `{expression}` in *line* as IPython does for magics (or leave it)."""
    if len(line) > EXPANDED_CHARS or ("$" not in line and "{" not in line):
        return line
    try:
        return _FORMATTER.vformat(line, args=[], kwargs={**user_ns, **local_ns})
    except Exception:  # IPython's rule: a line that does not expand is used as it is
        return line


def _shell_words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise UsageError(f"Cannot read the arguments: {reason(exc)}.") from None


def _python_words(source: str) -> list[str]:
    """Split *source* into words as Python reads it, dropping comments.

    A word is a run of tokens with no space between them outside brackets, so `f(1, y=2)` and
    `"a  b"` stay whole, and the words joined by single spaces read as the same Python. Source
    that Python cannot tokenize stays one word, for the call's parser to say what is wrong.
    """
    starts = [0, *itertools.accumulate(map(len, io.StringIO(source).readlines()))]
    spans: list[list[int]] = []  # [begin, end] of each word in *source*
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in _NOT_WORDS or token.string.isspace():  # 3.11: ERRORTOKEN " "
                continue
            begin = starts[token.start[0] - 1] + token.start[1]
            if depth == 0 and (not spans or begin != spans[-1][1]):
                spans.append([begin, begin])
            spans[-1][1] = starts[token.end[0] - 1] + token.end[1]
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth = max(depth - 1, 0)
    except (tokenize.TokenError, SyntaxError):
        return [source.strip()]
    return [source[begin:end] for begin, end in spans]


# region Submitted calls

_PACK = "__daglite_nb_pack__"


def _pack(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    return func, args, kwargs


def _compile_call(source: str) -> Any:
    """Compile the call *source* into code that returns its callee and arguments, uncalled.

    Raises:
        UsageError: If *source* is not one call that compiles (a repeated keyword or `await`
            outside a function do not), or is nested too deeply for the compiler.
    """
    try:
        call = ast.parse(source, mode="eval").body
        if not isinstance(call, ast.Call):
            raise UsageError(f"submit takes a call such as task_fn(1, y=2), not {excerpt(source)}.")
        pack = ast.Call(ast.Name(_PACK, ast.Load()), [call.func, *call.args], call.keywords)
        tree = ast.fix_missing_locations(ast.Expression(pack))
        return compile(tree, "<%daglite submit>", "eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL character
        why = "options go before the call" if " --" in source else reason(exc)
        raise UsageError(
            f"submit takes a call such as task_fn(1, y=2), not {excerpt(source)} ({why})."
        ) from None
    except (RecursionError, MemoryError):
        raise UsageError(
            f"submit cannot read {excerpt(source)}: it is nested too deeply."
        ) from None
