"""What the container images do, minus Docker (no engine here): build the wheel from exactly the
files the Dockerfiles copy, install it into a fresh venv, and run the images' entrypoints from it.

The fresh venv gets the wheel itself, with its dependencies borrowed read-only from the project's
venv through a path entry (no network, no minutes reinstalling lupa/psycopg); the editable install
of the project is not visible there, so `agent_registry` can only come from the wheel (asserted).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "Dockerfile", REPO / "Dockerfile.runtime"]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def agentreg(self) -> Path:
        return self.venv / "bin" / "agentreg"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AGENTREG_"))
        }
        clean["PATH"] = f"{self.venv / 'bin'}:{clean.get('PATH', '')}"
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=120,
            env={**clean, **(env or {})},
            cwd=cwd,
        )


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The repo paths a Dockerfile's build stage copies (COPY without --from)."""
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)$", line.strip())
        if match:
            *srcs, _dest = match[1].split()
            sources.extend(s.rstrip("/") for s in srcs)
    return sources


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    context = root / "context"
    context.mkdir()
    # The same build context the Dockerfile sees: only what it copies.
    sources = dockerfile_sources(DOCKERFILES[0])
    assert sources == dockerfile_sources(DOCKERFILES[1])
    for src in sources:
        path = REPO / src
        if path.is_dir():
            shutil.copytree(
                path, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(path, context / src)
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--wheel-dir", str(dist), "-q"],
        cwd=context,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wheel,) = dist.glob("agent_registry-*.whl")

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    purelib = Path(
        subprocess.check_output(
            [
                str(env_dir / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            text=True,
        ).strip()
    )
    # Dependencies from the project's venv, appended after the fresh venv's own site-packages.
    (purelib / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(purelib),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # pip --target does not write console scripts; write the one the wheel declares, as pip would.
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(
            next(
                n
                for n in zipfile.ZipFile(wheel).namelist()
                if n.endswith(".dist-info/entry_points.txt")
            )
        )
        .decode()
    )
    assert re.search(r"^agentreg\s*=\s*agent_registry\.cli:main$", entry_points, re.M), entry_points
    script = env_dir / "bin" / "agentreg"
    script.write_text(
        f"#!{env_dir / 'bin' / 'python'}\n"
        "import sys\nfrom agent_registry.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return Installed(wheel=wheel, venv=env_dir)


def test_the_package_comes_from_the_wheel(installed: Installed) -> None:
    done = installed.run(
        str(installed.python), "-c", "import agent_registry; print(agent_registry.__file__)"
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.venv), done.stdout


def test_migrations_are_inside_the_wheel(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "agent_registry/_migrations/env.py" in names
    assert "agent_registry/_migrations/script.py.mako" in names
    versions = [n for n in names if re.match(r"agent_registry/_migrations/versions/[^/]+\.py$", n)]
    assert [v for v in versions if not v.endswith("__init__.py")], names
    # No test or build clutter in the image's package.
    assert not [n for n in names if n.startswith(("tests/", "operator/"))]


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["run", "--help"],
        ["runtime", "--help"],
        ["migrate", "--help"],
        ["crds", "--help"],
    ],
    ids=lambda c: " ".join(c),
)
def test_entrypoints_run_from_the_installed_wheel(installed: Installed, command: list[str]) -> None:
    done = installed.run(str(installed.agentreg), *command)
    assert done.returncode == 0, done.stderr
    assert "Usage: agentreg" in done.stdout


def test_every_flag_the_chart_passes_exists(installed: Installed) -> None:
    # A flag renamed in `agentreg run` would crash-loop the operator pod: check each one the chart
    # renders, for every value set of the chart tests.
    from install.chart import render
    from install.test_chart import VALUE_SETS, operator_container

    run_help = installed.run(str(installed.agentreg), "run", "--help").stdout
    flags = {
        arg.split("=", 1)[0]
        for values in VALUE_SETS.values()
        for arg in operator_container(render(values))["args"]
    }
    assert {"--api-listen", "--health-listen", "--registry-url", "--webhook-cert"} <= flags
    missing = sorted(f for f in flags if not re.search(rf"(^|[\s,/]){re.escape(f)}\b", run_help))
    assert not missing, f"`agentreg run` has no {missing}:\n{run_help}"


def test_migrate_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    # Exactly what the chart's init container does: `agentreg migrate`, the URL in the environment.
    db = tmp_path / "agent-registry.db"
    done = installed.run(
        str(installed.agentreg),
        "migrate",
        cwd=tmp_path,
        env={"AGENTREG_DATABASE_URL": f"sqlite+aiosqlite:///{db}"},
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {
        "agent_behaviors",
        "agent_registry",
        "agent_behavior_assignments",
        "alembic_version",
    } <= tables


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multistage_pinned_and_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is a build arg with a default"
    # An exact patch release and Debian release (or a digest): never a moving tag like 3.11-slim.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base[1]), base[1]
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$", text, re.M)
    assert len(stages) >= 2
    assert stages[0][1] == "build"
    assert all(image == "${PYTHON_IMAGE}" for image, _ in stages)
    assert "pip wheel" in text
    assert "/wheels/agent_registry-" in text
    assert "COPY --from=build /opt/agent-registry /opt/agent-registry" in text
    users = re.findall(r"^USER\s+(\S+)$", text, re.M)
    assert users, "no USER"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users  # numeric, not root
