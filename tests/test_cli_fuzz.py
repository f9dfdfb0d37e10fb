"""Malformed input to every command: one clear line and exit 2, never a traceback, never
silent garbage, and nothing on any chain before the input was checked.

Each case runs the command in this process (``fedmarket.cli``'s own entry point, with its
error handling) and asserts the exit code, that the message names what was wrong, and that
no exception other than a user error escaped.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from fedmarket import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BREAST = (EXAMPLES / "breast_cancer.toml").read_text()


def fedmarket(*args: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of ``fedmarket ARGS`` through its console entry point."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fedmarket", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue() + err.getvalue()


def edited(old: str, new: str) -> Callable[[Path], str]:
    """A breast-cancer spec with one edit, its data paths made absolute."""

    def make(folder: Path) -> str:
        assert old in BREAST, old
        path = folder / "spec.toml"
        path.write_text(BREAST.replace(old, new, 1))
        return str(path)

    return make


def csv(text: str, name: str = "data.csv", header: str = "a,b,target\n") -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        (folder / name).write_text(header + text)
        return f"csv:{folder / name}"

    return make


def run_csv(text: str, labels: str, model: str = "logistic") -> Callable[[Path], str]:
    """A spec over a small CSV (two features) with the given labels line (64 points: the
    privacy floor of a data fill)."""

    def make(folder: Path) -> str:
        rows = "a,b,target\n" + text
        (folder / "d.csv").write_text(rows)
        spec = f"""
[task]
name = "t"
model = "{model}"
num_points = 64
epoch_seconds = 60
max_epochs = 2
bidding_seconds = 60
[budget]
data = 100000
processing = 100000
[features]
names = ["a", "b"]
mean = [0.0, 0.0]
std = [1.0, 1.0]
[labels]
{labels}
[run]
dataset = "csv:d.csv"
[[run.owners]]
name = "o"
points = 64
price = 1
[[run.processors]]
name = "p"
capacity = 64
price = 1
"""
        (folder / "spec.toml").write_text(spec)
        return str(folder / "spec.toml")

    return make


ROWS = "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(150))
ROWS3 = "".join(f"{i % 7},{i % 5},{i % 3}\n" for i in range(150))
SPEC = "{spec}"  # replaced by the case's spec maker
DATA = "{data}"


# (arguments, what the message must say, makers for {spec} / {data})
CASES: list[tuple[tuple[str, ...], str, dict[str, Callable[[Path], str]]]] = [
    # ---- run: the spec file
    (("run", "missing.toml"), "no such spec file", {}),
    (("run", "{dir}"), "cannot read spec file", {}),
    (("run", SPEC), "not valid TOML", {"spec": lambda f: _write(f, "x.toml", "[task\n")}),
    (("run", SPEC), "cannot read spec file", {"spec": lambda f: _write_bytes(f, b"\xff\xfe\x00")}),
    (("run", SPEC), "invalid task spec", {"spec": lambda f: _write(f, "x.toml", "")}),
    (("run", SPEC), "task.max_epochs", {"spec": edited("max_epochs = 10", 'max_epochs = "x"')}),
    (("run", SPEC), "task.max_epochs", {"spec": edited("max_epochs = 10", "max_epochs = 0")}),
    (("run", SPEC), "task.num_points", {"spec": edited("num_points = 454", "num_points = 0")}),
    (("run", SPEC), "not a model kind", {"spec": edited('model = "logistic"', 'model = "forest"')}),
    (("run", SPEC), "budget.data", {"spec": edited("data = 684405000000000000", "data = 1.5")}),
    (("run", SPEC), "budget.data", {"spec": edited("data = 684405000000000000", "data = -1")}),
    (
        ("run", SPEC),
        "exactly 2 labels.classes",
        {"spec": edited("classes = [0, 1]", "classes = [0, 1, 2]")},
    ),
    (
        ("run", SPEC),
        "not among labels.classes",
        {"spec": edited("classes = [0, 1]", "classes = [5, 7]")},
    ),
    (("run", SPEC), "features", {"spec": edited("spread = 2.5", "spread = 0")}),
    (("run", SPEC), "features", {"spec": edited("mean = [14.073789", "mean = [nan")}),
    (
        ("run", SPEC),
        "labels.target_center",
        {"spec": edited("target_center = 0.0", "target_center = 3.0")},
    ),
    (
        ("run", SPEC),
        "run.owners[0].price",
        {"spec": edited("price = 1000000000000000", "price = -5")},
    ),
    (
        ("run", SPEC),
        "run.processors[0].capacity",
        {"spec": edited("capacity = 227", "capacity = 0")},
    ),
    (
        ("run", SPEC),
        "party names must be unique",
        {"spec": edited('name = "owner2"', 'name = "owner1"')},
    ),
    (
        ("run", SPEC),
        "bad processor attack",
        {"spec": edited('name = "processor1"', 'name = "processor1"\nattack = "teleport"')},
    ),
    (
        ("run", SPEC),
        "bad owner attack",
        {"spec": edited('name = "owner1"', 'name = "owner1"\nattack = "random"')},
    ),
    (
        ("run", SPEC),
        "run.split",
        {"spec": edited('split = "iid"', 'split = "dirichlet:x"')},
    ),
    (
        ("run", SPEC),
        "dirichlet:ALPHA needs ALPHA > 0",
        {"spec": edited('split = "iid"', 'split = "dirichlet:0"')},
    ),
    (
        ("run", SPEC),
        "run.requester_attack",
        {
            "spec": edited(
                'scenario = "buy-all"', 'scenario = "buy-all"\nrequester_attack = "vanish@x"'
            )
        },
    ),
    (
        ("run", SPEC),
        "own-compute the owners process their own data",
        {"spec": edited('scenario = "buy-all"', 'scenario = "own-compute"')},
    ),
    (
        ("run", SPEC),
        "requester_points is only for the own-data scenario",
        {"spec": edited("requester_points = 0", "requester_points = 5")},
    ),
    (("run", SPEC), "surprise", {"spec": edited("[stopping]", "[stopping]\nsurprise = 1")}),
    (
        ("run", SPEC),
        "no [run] section",
        {"spec": lambda f: _write(f, "x.toml", BREAST.split("\n[run]\n")[0].rsplit("#", 1)[0])},
    ),
    (
        ("run", SPEC),
        "unknown scikit-learn data set",
        {"spec": edited('dataset = "sklearn:breast_cancer"', 'dataset = "sklearn:nope"')},
    ),
    (
        ("run", SPEC),
        "no such data file",
        {"spec": edited('dataset = "sklearn:breast_cancer"', 'dataset = "csv:/nope/x.csv"')},
    ),
    (
        ("run", SPEC),
        "features.names lists 30 features, the data set has 4",
        {"spec": edited('dataset = "sklearn:breast_cancer"', 'dataset = "sklearn:iris"')},
    ),
    (
        ("run", SPEC),
        "owners hold",
        {"spec": edited("points = 227", "points = 100000")},
    ),
    # ---- run: the data
    (
        ("run", SPEC),
        "not a finite number",
        {"spec": run_csv(ROWS + "1,inf,0\n", "classes = [0, 1]")},
    ),
    (
        ("run", SPEC),
        "is not a number: 'yes'",
        {"spec": run_csv(ROWS + "1,2,yes\n", "classes = [0, 1]")},
    ),
    (("run", SPEC), "not among labels.classes", {"spec": run_csv(ROWS3, "classes = [0, 1]")}),
    (
        ("run", SPEC),
        "no row of class [2]",
        {"spec": run_csv(ROWS, "classes = [0, 1, 2]", "multiclass")},
    ),
    (
        ("run", SPEC),
        "no label column 'y'",
        {"spec": run_csv(ROWS, 'column = "y"\nclasses = [0, 1]')},
    ),
    (("run", SPEC), "fields, header has", {"spec": run_csv(ROWS + "1,2\n", "classes = [0, 1]")}),
    # ---- run: the options
    (
        ("run", SPEC, "--out", "{file}"),
        "is a file",
        {"spec": edited("max_epochs = 10", "max_epochs = 1")},
    ),
    (
        ("run", SPEC, "--market", "0x" + "11" * 20),
        "--market needs --chain URL",
        {"spec": edited("max_epochs = 10", "max_epochs = 1")},
    ),
    (
        ("run", SPEC, "--workers", "-1"),
        "--workers",
        {"spec": edited("max_epochs = 10", "max_epochs = 1")},
    ),
    (
        ("run", SPEC, "--chain", "http://127.0.0.1:1"),
        "127.0.0.1:1",
        {"spec": edited("max_epochs = 10", "max_epochs = 1")},
    ),
    (("run",), "Missing argument", {}),
    (("rnu",), "Did you mean 'run'", {}),
    # ---- init
    (("init", "{file}"), "already exists", {}),
    (("init", "{dir}"), "is a folder", {}),
    (("init", "x.toml", "--dataset", "sklearn:nope"), "unknown scikit-learn data set", {}),
    (("init", "x.toml", "--dataset", "foo:bar"), "unknown data set", {}),
    (("init", "x.toml", "--dataset", "synthetic:abc"), "bad synthetic data set", {}),
    (("init", "x.toml", "--dataset", "csv:nope.csv"), "no such data file", {}),
    (
        ("init", "x.toml", "--dataset", DATA),
        "not a finite number",
        {"data": csv(ROWS + "1,-inf,1\n")},
    ),
    (
        ("init", "x.toml", "--dataset", DATA),
        "not a number: 'maybe'",
        {"data": csv(ROWS + "1,2,maybe\n")},
    ),
    (
        ("init", "x.toml", "--dataset", DATA),
        "too few to split",
        {"data": csv("1,0\n2,1\n", header="a,target\n")},
    ),
    (
        ("init", "x.toml", "--dataset", DATA, "--owners", "100"),
        "owners cannot share",
        {"data": csv(ROWS)},
    ),
    (
        ("init", "x.toml", "--dataset", DATA),
        "no complete rows",
        {"data": csv(",\n,\n", header="a,target\n")},
    ),
    (("init", "x.toml", "--owners", "0"), "--owners", {}),
    (("init", "x.toml", "--processors", "1000"), "--processors", {}),
    # ---- report
    (("report", "{dir}"), "no report here", {}),
    (("report", "{report:list}"), "not a fedmarket report", {}),
    (("report", "{report:null}"), "not a fedmarket report", {}),
    (("report", "{report:garbage}"), "not a fedmarket report", {}),
    (("report", "{report:version}"), "not a fedmarket report", {}),
    # ---- task
    (
        ("task", "show", "0", "--chain", "http://127.0.0.1:1", "--market", "0x" + "11" * 20),
        "127.0.0.1:1",
        {},
    ),
    (
        (
            "task",
            "cancel",
            "0",
            "--chain",
            "http://127.0.0.1:1",
            "--market",
            "0x" + "11" * 20,
            "--key",
            "{file}",
        ),
        "not an Ethereum keystore",
        {},
    ),
]


def _write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def _write_bytes(folder: Path, data: bytes) -> str:
    (folder / "bin.toml").write_bytes(data)
    return str(folder / "bin.toml")


def _report(folder: Path, kind: str) -> str:
    target = folder / f"report-{kind}"
    target.mkdir()
    content = {"list": "[1, 2]", "null": "null", "garbage": "{nope", "version": '{"version": 99}'}
    (target / "report.json").write_text(content[kind])
    return str(target)


@pytest.mark.parametrize(
    ("args", "expected", "makers"),
    CASES,
    ids=[f"{i:02d}-{' '.join(c[0][:1])}-{c[1][:32]}" for i, c in enumerate(CASES)],
)
def test_malformed_input_is_one_clear_line(
    args: tuple[str, ...],
    expected: str,
    makers: dict[str, Callable[[Path], str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    values = {"dir": str(tmp_path / "a-folder"), "file": str(tmp_path / "a-file")}
    values |= {name: make(tmp_path) for name, make in makers.items()}
    argv = []
    for a in args:
        if a.startswith("{report:"):
            argv.append(_report(tmp_path, a[8:-1]))
        else:
            argv.append(a.format(**values) if a.startswith("{") else a)
    code, output = fedmarket(*argv)
    assert code == 2, output
    assert "Traceback" not in output
    assert expected in output, output


def test_at_least_fifty_malformed_inputs() -> None:
    assert len(CASES) >= 50
    assert json.dumps([c[1] for c in CASES])  # every case names what it expects
