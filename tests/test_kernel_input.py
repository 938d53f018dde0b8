"""What users type, in a real kernel: comments on magic lines, any callable, malformed input."""

from __future__ import annotations

import json
import random

TASKS = """
import functools, math
import daglite_nb as dnb
from daglite import task

@task
def sq(x):
    return x * x

@task
def echo(*args):
    return args

class Scale:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return self.k * x

    def times(self, x):
        return self.k * x

    async def plus(self, x):
        return self.k + x

class Later:
    async def __call__(self, x):
        return x + 1
"""


# region Comments and submit's Python


def test_every_magic_line_may_end_in_a_comment(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend thread   # lives across cells until %daglite stop")
    assert "default backend: inline" in kernel.ok("%daglite use inline   # for now").stdout
    for command in ("status", "backends", "panel"):
        kernel.ok(f"%daglite {command}   # {command} # with a second hash")
    kernel.ok("%%daglite --backend thread   # this cell only\nbackend = dnb.status().backend")
    assert kernel.eval("backend") == "thread"
    facts = kernel.ok(
        "fut = %daglite submit --backend=thread sq(3)   # a comment\n"
        "print((fut.result(), fut.backend))"
    )
    assert facts.stdout.strip() == "(9, 'thread')"
    assert "daglite session stopped" in kernel.ok("%daglite stop   # done").stdout


def test_submit_reads_its_call_as_python(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend inline\nx = 3\nname = 'thread'")
    # Strings keep their spaces and hashes; the comment after the call is dropped.
    kernel.ok('fut = %daglite submit echo("a  #  b", {1: 2})  # echo(1)')
    assert kernel.eval("fut.result()") == ("a  #  b", {1: 2})
    # Braces and dollars are Python, not IPython's expansion.
    kernel.ok('fut = %daglite submit echo({x}, "$x", "{x}")')
    assert kernel.eval("fut.result()") == ({3}, "$x", "{x}")
    kernel.ok("fut = %daglite submit --backend inline echo(  1 ,\t2  )")
    assert kernel.eval("fut.result()") == (1, 2)
    # Other commands keep IPython's expansion of $name and {expression}.
    assert "default backend: thread" in kernel.ok("%daglite use $name   # thread").stdout


# region Any callable


def test_any_callable_can_be_submitted_on_every_local_backend(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend inline")
    calls = (
        "futs = [dnb.submit(math.factorial, 5, backend=b), dnb.submit(dict, a=1, backend=b),"
        " dnb.submit(Scale(3), 2, backend=b), dnb.submit(Scale(2).times, 5, backend=b),"
        " dnb.submit(Scale(10).plus, 1, backend=b), dnb.submit(Later(), 1, backend=b),"
        " dnb.submit(functools.partial(pow, 2), 5, backend=b)]\n"
        "fut = %daglite submit --backend {b} len([1, 2])\n"
        "futs.append(fut)\n"
        "fut = %daglite submit --backend={b} dict(a=1)\n"
        "futs.append(fut)"
    )
    names = ["factorial", "dict", "Scale", "times", "plus", "Later", "partial", "len", "dict"]
    results = [120, {"a": 1}, 6, 10, 11, 2, 32, 2, {"a": 1}]
    for backend in ("inline", "thread", "process"):
        kernel.ok(f"b = {backend!r}\n" + calls.replace("{b}", backend))
        assert kernel.eval("[f.result(timeout=30) for f in futs]") == results
        assert kernel.eval("[f.task_name for f in futs]") == names
        assert kernel.eval("{f.backend for f in futs}") == {backend}
    group = "dnb.map(len, [[1], [1, 2]], backend='process')"
    assert kernel.eval(f"{group}.results()") == [1, 2]
    kernel.ok("fut = %daglite submit len([1, 2])")
    assert kernel.eval("str(fut)") == "<LiveFuture len([1, 2]) on inline: finished>"


# region Malformed input

PATHS = [
    "stores/ok",
    "/proc/nope/x",  # cannot be created
    "a-file/x",  # under a file (the cell creates `a-file`)
    "n" * 300,  # a name too long
    "bad\x00path",
    "s3://bucket/x",  # no s3fs here
    "'quoted path'",
    '"unclosed',
]
NUMBERS = ["2", "0", "-1", "x", "1e3", "9" * 5000, "''", "3 # comment"]
BACKENDS = ["inline", "thread", "threads", "sequential", "nope", "''", "-", "b" * 20_000]
CALLS = [
    "sq(3)",
    "len([1, 2])",
    "dict(a=1)",
    "sq(x=1, x=2)",
    "sq(await f())",
    "sq(yield)",
    "sq(*)",
    "sq(**)",
    "sq(*3)",
    "sq",
    "sq(",
    "sq())",
    "sq(1)(2)",
    "nope(1)",
    "sq(1 / 0)",
    "sq.nope(1)",
    "sq(x := 3)",
    "lambda: 1",
    "3",
    "sq('unterminated)",
    'sq("a # b")',
    "sq({x})",
    "sq($x)",
    "sq(?)",
    "sq(\x00)",
    "sq(1,\n2)",
    "sq(" + "(" * 300 + "1" + ")" * 300 + ")",  # too many parentheses for the parser
    "sq(" + "-" * 10_000 + "1)",  # MemoryError in the parser
    "sq(" + "1+" * 10_000 + "1)",  # RecursionError in the parser
    "sq(" + "[" * 3_000 + "]" * 3_000 + ")",
    "sq(" + ", ".join(["1"] * 5_000) + ")",
    "n" * 20_000 + "(1)",
]
OPTIONS = {
    "--backend": BACKENDS,
    "--cache-store": PATHS,
    "--dataset-store": PATHS,
    "--max-threads": NUMBERS,
    "--max-processes": NUMBERS,
    "--dask-workers": NUMBERS,
    "--dask-threads": NUMBERS,
    "--dask-address": ["tcp://127.0.0.1:1", "", "x" * 5_000],
}
GARBAGE = ["'", '"', "\\", "#", "# c", "$x", "{x}", "{", "}", "=", "--", "-", "\x00", "é", "\t"]


def _line(rng: random.Random) -> str:
    """One %daglite line, mostly malformed: a command, options, values, then mutations."""
    kind = rng.choice(["start", "start", "store", "submit", "submit", "use", "other", "huge"])
    if kind == "store":
        words = ["start", rng.choice(["--cache-store", "--dataset-store"]), rng.choice(PATHS)]
    elif kind == "start":
        words = ["start"]
        for _ in range(rng.randint(0, 3)):
            option = rng.choice([*OPTIONS, "--no-progress", "--colour", "--b", "--dask", "-x"])
            value = rng.choice(OPTIONS.get(option, ["", "blue"]))
            words += [f"{option}={value}"] if rng.random() < 0.3 else [option, value]
    elif kind == "submit":
        words = ["submit"]
        if rng.random() < 0.4:
            backend = rng.choice(BACKENDS[:5])
            words += [f"--backend={backend}"] if rng.random() < 0.5 else ["--backend", backend]
        words.append(rng.choice(CALLS))
    elif kind == "use":
        words = ["use", *rng.sample(BACKENDS, rng.randint(0, 2))]
    elif kind == "other":
        command = rng.choice(["status", "backends", "panel", "stop", "launch", "", "-h", "sub"])
        words = [command, *rng.sample(["now", "--force", "-v", "x" * 300], rng.randint(1, 2))]
    else:
        words = [rng.choice(["start", "use", "status", "frob"]), *["w" * 50] * 2_000]
    for _ in range(rng.randint(0, 2)):  # mutations: a stray character, a cut, a comment
        position = rng.randint(0 if rng.random() < 0.2 else 1, len(words))
        words.insert(position, rng.choice(GARBAGE))
    line = " ".join(words)
    if rng.random() < 0.2:
        line = line[: rng.randint(0, len(line))]
    if rng.random() < 0.3:
        line += rng.choice(["  # a comment", "#", " # {x} $x 'quote", "  #!"])
    return line


FUZZ = """
import json
import daglite_nb as dnb
from IPython.core.error import UsageError

open("a-file", "w").close()
x = 3
shell = get_ipython()
outcomes = []

def session_open():
    return dnb.status().state == "open"

for line in json.load(open("lines.json")):
    starting = line.split()[:1] == ["start"]
    if starting and session_open():
        dnb.stop()
    if not starting and not session_open():
        dnb.start(backend="inline")
    before = dnb.session.current()
    try:
        shell.run_line_magic("daglite", line)
        outcome = ["ok", ""]
    except UsageError as exc:
        outcome = ["usage", str(exc)]
    except BaseException as exc:
        outcome = ["internal", repr(exc)[:300]]
    after = dnb.session.current()
    if starting:
        kept = (after is not None) == (outcome[0] == "ok")
    else:
        kept = after is before or (outcome[0] == "ok" and line.split()[:1] == ["stop"])
    if kept and after is not None:
        kept = dnb.submit(sq, 3).result(timeout=30) == 9
    outcomes.append([*outcome, kept])

json.dump(outcomes, open("outcomes.json", "w"))
"""

LONGEST_ECHO = 80
"""The longest run of a line's characters that its error message may repeat."""


def test_fuzzed_lines_give_one_sentence_usage_errors_and_keep_the_session(kernel, tmp_path):
    rng = random.Random(11)
    lines = [_line(rng) for _ in range(600)]
    (tmp_path / "lines.json").write_text(json.dumps(lines))
    kernel.ok(TASKS)
    kernel.ok(FUZZ, timeout=600)
    outcomes = json.loads((tmp_path / "outcomes.json").read_text())
    problems = [
        f"{problem} for {line[:60]!r}"
        for line, outcome in zip(lines, outcomes, strict=True)
        for problem in _problems(line, *outcome)
    ]
    assert not problems, "\n".join(problems)
    kinds = [kind for kind, _, _ in outcomes]
    assert kinds.count("usage") >= 400 and kinds.count("ok") >= 20, kinds


def _problems(line: str, kind: str, message: str, kept: bool) -> list[str]:
    problems = [] if kept else ["the session was lost or is unusable"]
    if kind == "internal":
        return [*problems, f"internal error {message}"]
    if kind == "usage":
        if not message.endswith(".") or len(message.splitlines()) != 1:
            problems.append(f"not one sentence: {message!r}")
        windows = (message[i : i + LONGEST_ECHO + 1] for i in range(len(message) - LONGEST_ECHO))
        if len(message) > 300 or any(window in line for window in windows):
            problems.append(f"echoes too much of the line: {message!r}")
    return problems
