"""Task specs: every invalid field is named with its line; the on-chain hash is canonical."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedmarket.errors import ConfigError
from fedmarket.spec import load_spec, parse_spec

VALID = """\
[task]
name = "bc"
model = "logistic"
num_points = 400
epoch_seconds = 60
max_epochs = 5
bidding_seconds = 30

[budget]
data = 4000
processing = 20000

[features]
names = ["a", "b"]
mean = [0.0, 1.0]
std = [1.0, 2.0]

[labels]
classes = [0, 1]

[run]
dataset = "sklearn:breast_cancer"

[[run.owners]]
name = "B"
points = 200
price = 5

[[run.owners]]
name = "C"
points = 200
price = 6

[[run.processors]]
name = "D"
capacity = 400
price = 2
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="t.toml")
    return str(info.value)


def _replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


def test_valid_spec_parses_with_defaults() -> None:
    spec = parse_spec(VALID)
    assert spec.task.late_penalty_bps == 2000
    assert spec.he.preset == "n8192"
    assert spec.run is not None and [o.name for o in spec.run.owners] == ["B", "C"]


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("max_epochs = 5", "max_epochs = 0", "task.max_epochs", 6),
        ('model = "logistic"', 'model = "forest"', "task.model", 3),
        ("processing = 20000", "processing = 1.5", "budget.processing", 11),
        ("data = 4000", 'data = "4000"', "budget.data", 10),
        ("std = [1.0, 2.0]", "std = [1.0]", "features", 13),
        ("std = [1.0, 2.0]", "std = [1.0, 0.0]", "features", 13),
        ('name = "bc"', 'name = "has space"', "task.name", 2),
        ("bidding_seconds = 30", "bidding_seconds = 30\nsurprise = 1", "task.surprise", 8),
        ("price = 6", "price = -6", "run.owners[1].price", 32),
        ("capacity = 400", "capacity = 0", "run.processors[0].capacity", 36),
        ('name = "C"', 'name = "B"', "run", 21),
        ("classes = [0, 1]", "classes = [0, 1, 2]", "(top level)", None),
    ],
)
def test_each_invalid_field_is_named_with_its_line(
    old: str, new: str, field: str, line: int | None
) -> None:
    message = _error(_replace(old, new))
    assert f": {field}: " in message
    if line is not None:
        assert f"t.toml:{line}: {field}" in message


def test_several_problems_are_reported_together() -> None:
    text = _replace("max_epochs = 5", "max_epochs = -1").replace("data = 4000", "data = -1")
    message = _error(text)
    assert "task.max_epochs" in message and "budget.data" in message


def test_missing_section_is_named() -> None:
    text = VALID.split("[budget]")[0] + "[features]" + VALID.split("[features]")[1]
    assert "budget: Field required" in _error(text)


def test_toml_syntax_error_names_the_line() -> None:
    message = _error(VALID.replace("num_points = 400", "num_points = = 400"))
    assert re.search(r"line 4\b", message)


def test_model_and_labels_must_agree() -> None:
    assert "exactly 2 labels.classes" in _error(_replace("classes = [0, 1]", "classes = [1]"))
    linear = _replace('model = "logistic"', 'model = "linear"')
    assert "takes no labels.classes" in _error(linear)


def test_a_run_needs_a_processor() -> None:
    text = VALID.split("[[run.processors]]")[0]
    assert "at least one processor" in _error(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such spec file"):
        load_spec(tmp_path / "nope.toml")


def test_oversized_spec_is_rejected() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        parse_spec(VALID + "#" * (1 << 20))


def test_hash_ignores_layout_and_run_but_not_announced_fields() -> None:
    base = parse_spec(VALID).spec.spec_hash()
    assert len(base) == 32
    reordered = VALID.replace(
        "num_points = 400\nepoch_seconds = 60", "epoch_seconds   = 60\nnum_points = 400"
    )
    assert parse_spec(reordered).spec.spec_hash() == base
    assert parse_spec(_replace("price = 5", "price = 9")).spec.spec_hash() == base
    assert parse_spec(_replace("data = 4000", "data = 4001")).spec.spec_hash() != base
    explicit_default = _replace(
        "bidding_seconds = 30", "bidding_seconds = 30\nlate_penalty_bps = 2000"
    )
    assert parse_spec(explicit_default).spec.spec_hash() == base


def test_dump_spec_round_trips() -> None:
    from fedmarket.spec import dump_spec

    spec = parse_spec(VALID)
    assert parse_spec(dump_spec(spec, comments={"task": "hi"})) == spec
