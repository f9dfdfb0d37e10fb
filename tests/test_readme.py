"""The README's examples run as written (a user copies them first)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fedmarket.protocol.plaintext import Plaintext
from fedmarket.run import run_task
from fedmarket.spec import SpecFile, load_spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_tours_model_snippet_runs_on_a_demo_folder(tmp_path: Path) -> None:
    [snippet] = [b for b in python_blocks() if 'load_model("runs/demo")' in b]
    data = load_spec(ROOT / "examples" / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 2
    spec = SpecFile.model_validate(data)
    run_task(spec, base=ROOT / "examples", out=tmp_path / "runs" / "demo", workers=0,
             crypto=Plaintext(), chain_url="memory")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split()[0])
    assert accuracy > 0.85  # the model takes raw features, as the snippet promises


def test_the_two_commands_are_the_first_commands() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
