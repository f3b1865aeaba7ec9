"""The layers hold: `lint-imports` keeps the contracts in pyproject.toml, and it does catch a crossing import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts `root`'s packages ahead of the editable install, so a copy is analysed as the copy.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_repository_keeps_every_import_contract() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 9 kept, 0 broken." in result.stdout


def test_a_crossing_import_breaks_the_rules_contract(tmp_path: Path) -> None:
    for package in ("daemon", "sim"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    model = tmp_path / "daemon" / "rules" / "model.py"
    model.write_text(model.read_text().replace("from __future__ import annotations\n",
                                               "from __future__ import annotations\n\nimport daemon.signals\n", 1))

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "rules is pure: no providers, no cluster, no notifiers, no network libraries BROKEN" in result.stdout
    assert "daemon.rules is not allowed to import daemon.signals:" in result.stdout
    assert "daemon.rules.model -> daemon.signals" in result.stdout


def _copy(tmp_path: Path) -> None:
    for package in ("daemon", "sim"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")


def _inject(module: Path, line: str) -> None:
    module.write_text(module.read_text().replace("from __future__ import annotations\n",
                                                 f"from __future__ import annotations\n\n{line}\n", 1))


def test_io_in_the_lifecycle_core_breaks_its_contract(tmp_path: Path) -> None:
    _copy(tmp_path)
    _inject(tmp_path / "daemon" / "lifecycle.py", "import daemon.writer")

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "the lifecycle core is pure" in result.stdout
    assert "daemon.lifecycle -> daemon.writer" in result.stdout


def test_a_second_writer_breaks_the_one_writer_contract(tmp_path: Path) -> None:
    _copy(tmp_path)
    _inject(tmp_path / "daemon" / "reconcile.py", "import daemon.kube.events")

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "one writer: only daemon.writer reaches the write helpers (undo, Jobs, Events) BROKEN" in result.stdout
