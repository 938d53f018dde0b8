"""The magics in an in-process IPython shell: parsing, help and every UsageError."""

from __future__ import annotations

import asyncio

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython

import daglite_nb


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    shell.run_line_magic("load_ext", "daglite_nb")
    yield shell
    shell.run_line_magic("unload_ext", "daglite_nb")


@pytest.fixture
def session(ip):
    ip.run_line_magic("daglite", "start --backend inline")
    yield
    if daglite_nb.status().state == "open":
        ip.run_line_magic("daglite", "stop")


def magic(ip, line):
    return ip.run_line_magic("daglite", line)


def test_help_is_generated_from_the_arguments(ip, capsys):
    magic(ip, "--help")
    out = capsys.readouterr().out
    for word in ("start", "use", "status", "backends", "stop", "--backend"):
        assert word in out
    start_help = (magic(ip, "start --help"), capsys.readouterr().out)[1]
    for option in ("--cache-store", "--dataset-store", "--max-threads", "--max-processes"):
        assert option in start_help
    assert ip.find_line_magic("daglite").__doc__.startswith("usage: %daglite")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "Name a command: start, use, submit, restart, panel, status, backends or stop"),
        ("launch", "invalid choice: 'launch'"),
        ("use thread", "No daglite session is open; start one with %daglite start"),
        ("stop", "No daglite session is open"),
        ("start --backend nope", "Unknown backend 'nope'; choose one of: "),
        ("start --max-threads 0", "expected a positive integer, got '0'"),
        ("start --max-processes lots", "expected a positive integer, got 'lots'"),
        ("start --colour blue", "Unrecognized arguments: --colour blue"),
        ("start process", "process; name the backend with %daglite start --backend process."),
        ("start --backend 'thread", "Cannot read the arguments"),
        ("--backend thread", "--backend alone is for the cell magic"),
    ],
)
def test_mistakes_without_a_session_are_usage_errors(ip, line, message):
    with pytest.raises(UsageError, match=_literal(message)):
        magic(ip, line)
    assert daglite_nb.status().state == "none"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("start", "A daglite session is already open (backend 'inline'); switch backends with"),
        ("use nope", "Unknown backend 'nope'; choose one of: "),
        ("use", "The following arguments are required: name"),
    ],
)
def test_mistakes_keep_the_session(ip, session, line, message):
    with pytest.raises(UsageError, match=_literal(message)):
        magic(ip, line)
    status = daglite_nb.status()
    assert (status.state, status.backend) == ("open", "inline")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "start --cache-store /proc/nope/x",
            "The cache store cannot be created at '/proc/nope/x' (--cache-store): "
            "No such file or directory.",
        ),
        (
            "start --dataset-store " + "n" * 300,
            f"The dataset store cannot be created at '{'n' * 37}…' (--dataset-store): "
            "File name too long.",
        ),
        ("start --backend thread --colour blue  # a comment", "Unrecognized arguments: --colour"),
        (
            "start --colour " + "c" * 20_000,
            f"Unrecognized arguments: --colour {'c' * 30}…; see %daglite --help.",
        ),
        (
            "frob" + "b" * 20_000,
            f"Argument COMMAND: invalid choice: 'frob{'b' * 33}…' (choose from 'start', ",
        ),
        (
            "start --max-threads " + "9" * 5_000,
            f"Argument --max-threads: expected a positive integer, got '{'9' * 37}…'; see",
        ),
    ],
)
def test_bad_options_and_long_input_give_short_usage_errors(ip, line, message):
    with pytest.raises(UsageError, match=_literal(message)):
        magic(ip, line)
    assert daglite_nb.status().state == "none"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("sq", "submit takes a call such as task_fn(1, y=2), not 'sq'."),
        (  # Python cannot split it into words: the comment is part of the call
            "sq(",
            "submit takes a call such as task_fn(1, y=2), not 'sq(  # a comment' "
            "('(' was never closed).",
        ),
        (
            "sq(x=1, x=2)",
            "submit takes a call such as task_fn(1, y=2), not 'sq(x=1, x=2)' "
            "(keyword argument repeated: x).",
        ),
        (
            "sq(await f())",
            "submit takes a call such as task_fn(1, y=2), not 'sq(await f())' "
            "('await' outside function).",
        ),
        ("sq(" + "1+" * 10_000 + "1)", f"submit cannot read 'sq({'1+' * 17}…': it is nested"),
        ("sq(" + "-" * 10_000 + "1)", "it is nested too deeply."),
        ("nope(1)", "Cannot evaluate 'nope(1)': NameError: name 'nope' is not defined."),
        ("--backend=nope sq(1)", "Unknown backend 'nope'; choose one of: "),
        ("--backend", "Argument --backend: expected one argument; see %daglite --help."),
        ("-x sq(1)", "Unrecognized arguments: -x; see %daglite --help."),
        ("sq(1) --backend thread", "not 'sq(1) --backend thread' (options go before the call)."),
        ("sq(1)(2)", "submit needs a task or a callable, got 1."),
    ],
)
def test_submit_mistakes_are_one_sentence(ip, session, call, message):
    ip.run_cell("from daglite import task\n@task\ndef sq(x):\n    return x * x")
    with pytest.raises(UsageError, match=_literal(message)) as raised:
        magic(ip, f"submit {call}  # a comment")
    assert len(str(raised.value)) < 200
    assert magic(ip, "submit sq(3)").result() == 9


def test_python_api_mistakes_are_usage_errors(ip, session):
    with pytest.raises(UsageError, match="Unknown session option 'colour'; valid options: backend"):
        daglite_nb.start(colour="blue")
    with pytest.raises(UsageError, match="max_threads must be a positive integer, got 'x'"):
        daglite_nb.start(max_threads="x")
    with pytest.raises(UsageError, match="progress must be True or False, got 'no'"):
        daglite_nb.start(progress="no")
    with pytest.raises(UsageError, match=_literal("plugin instances (not classes), got [3].")):
        daglite_nb.start(plugins=[3])
    with pytest.raises(UsageError, match="needs a subclass of daglite.backends.Backend"):
        daglite_nb.register_backend("mine", object)
    with pytest.raises(UsageError, match="must be an identifier"):
        daglite_nb.register_backend("my backend", object)
    with pytest.raises(UsageError, match=_literal("submit needs a task or a callable, got 3.")):
        daglite_nb.submit(3)
    with pytest.raises(UsageError, match=_literal(f"got {repr([0] * 13)[:38]}…].")):
        daglite_nb.submit([0] * 10_000)
    with pytest.raises(UsageError, match=_literal("max_threads must be a positive integer, got")):
        daglite_nb.start(max_threads="x" * 10_000)
    with pytest.raises(
        UsageError, match=_literal("map takes iterables of arguments; 5 is not one.")
    ):
        daglite_nb.map(abs, [1], 5)
    with pytest.raises(UsageError, match=_literal("map takes a task and its arguments' iterables")):
        daglite_nb.map(abs)
    assert daglite_nb.map(abs, []).results() == []
    for futures, timeout, message in [
        (3, None, "wait takes an iterable of futures, got 3."),
        ([1], None, "wait takes futures such as dnb.submit's, got 1."),
        ([], "1", "wait's timeout must be a number of seconds, got '1'."),
    ]:
        with pytest.raises(UsageError, match=_literal(message)):
            asyncio.run(daglite_nb.wait(futures, timeout))
    done, _ = asyncio.run(daglite_nb.wait([daglite_nb.submit(abs, -1)], timeout=30))
    assert [future.result() for future in done] == [1]
    assert daglite_nb.status().backend == "inline"


def test_a_store_that_cannot_be_created_is_a_usage_error_in_python_too(ip):
    with pytest.raises(UsageError, match=_literal("cannot be created at '/proc/nope/x' (--cache")):
        daglite_nb.start(cache_store="/proc/nope/x")
    assert daglite_nb.status().state == "none"


def test_unknown_backend_lists_every_usable_name(ip):
    valid = ", ".join(entry.name for entry in daglite_nb.list_backends())
    assert "inline, process, thread" in valid
    with pytest.raises(UsageError, match=_literal(f"choose one of: {valid}.")):
        magic(ip, "start --backend nope")


def test_usage_error_shows_one_line_without_traceback(ip, capsys):
    ip.run_cell("%daglite use thread")
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "UsageError: No daglite session is open; start one with %daglite start or dnb.start()."
    )
    assert "Traceback" not in captured.out + captured.err


def test_cell_magic_takes_only_backend(ip, session):
    with pytest.raises(UsageError, match="The cell magic takes only --backend NAME"):
        ip.run_cell_magic("daglite", "status", "x = 1")
    with pytest.raises(UsageError, match="Unknown backend 'nope'"):
        ip.run_cell_magic("daglite", "--backend nope", "x = 1")
    assert daglite_nb.status().backend == "inline"


def test_a_backend_that_cannot_start_leaves_the_previous_default(ip, session):
    from daglite.backends.base import Backend

    class Broken(Backend):
        name = "broken"

        def _start(self, *, context):
            raise RuntimeError("no cluster here")

        def _submit(self, func, args, kwargs, *, context):  # pragma: no cover
            raise AssertionError

    daglite_nb.register_backend("broken", Broken, aliases=("kaput",))
    with pytest.raises(UsageError, match="Backend 'broken' could not start: no cluster here"):
        magic(ip, "use kaput")
    assert daglite_nb.status().backend == "inline"
    table = str(daglite_nb.list_backends())
    assert "broken   kaput" in table and "register_backend" in table


def test_registered_backend_is_used_by_map_tasks(ip, session):
    from daglite import map_tasks
    from daglite.backends.local import InlineBackend

    calls = []

    class Recording(InlineBackend):
        name = "recording"

        def _submit(self, func, args, kwargs, *, context):
            calls.append(args)
            return super()._submit(func, args, kwargs, context=context)

    daglite_nb.register_backend("recording", Recording)
    assert daglite_nb.use("recording") == "recording"
    ip.run_cell("from daglite import map_tasks\nout = map_tasks(lambda x: x + 1, [1, 2])")
    assert ip.user_ns["out"] == [2, 3] and calls == [(1,), (2,)]
    assert map_tasks is not None


def _literal(text):
    import re

    return re.escape(text)


def test_aliases_share_one_backend(ip, session):
    from daglite import map_tasks

    daglite_nb.use("thread")
    for alias in ("threads", "threading"):
        assert map_tasks(lambda x: x, [1], backend=alias) == [1]
    assert daglite_nb.status().started == ("inline", "thread")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("start --dask-workers 0", "expected a positive integer, got '0'"),
        (
            "start --backend dask --dask-address tcp://127.0.0.1:1 --dask-workers 2",
            "dask_workers and dask_threads size a local cluster; they cannot be combined",
        ),
    ],
)
def test_dask_option_mistakes(ip, line, message):
    with pytest.raises(UsageError, match=_literal(message)):
        magic(ip, line)
    assert daglite_nb.status().state == "none"


def test_backend_settings_change_between_starts(ip, session):
    current = daglite_nb.session.current()
    current.configure(max_threads=3, dask_address="tcp://127.0.0.1:1")
    assert current.worker_counts[0] == 3
    assert current.options.backend_options("dask") == {"address": "tcp://127.0.0.1:1"}
    with pytest.raises(UsageError, match="Unknown backend setting 'colour'"):
        current.configure(colour="blue")
