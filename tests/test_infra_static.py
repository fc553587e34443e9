"""Static checks of the cluster files under infra/ (infra/README.md).

No Docker engine or Kubernetes cluster exists where these tests run, so nothing here starts a
container: every YAML file parses, and the fields that the images, the scripts, dagstudy and
the docs rely on are present and agree with one another. Flags of `mlflow server` and
`ray start` are looked up in the installed packages' source text (importing them takes
seconds), and the Ray cluster launcher file is validated with Ray's own JSON schema.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKER = INFRA / "docker"
K8S = INFRA / "k8s"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
CLUSTER = INFRA / "ray" / "cluster.yaml"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
LOCAL = INFRA / "local"
LOCAL_UP = LOCAL / "up.sh"
LOCAL_DOWN = LOCAL / "down.sh"
SCRIPTS = {
    # script in the repo -> the name the Dockerfile installs it under
    "dagstudy-env.sh": "dagstudy-env",
    "dagstudy-join.sh": "dagstudy-join",
    "mlflow-server.sh": "dagstudy-mlflow-server",
    "make-secrets.sh": None,
}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
PLACEHOLDER = "REPLACE_WITH_GENERATED_VALUE"


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _parse(path: Path) -> tuple:
    with path.open(encoding="utf-8") as f:
        return tuple(doc for doc in yaml.load_all(f, Loader=LOADER) if doc is not None)


def load_all(path: Path) -> list:
    """Every document of a YAML stream (parsed once per run; callers copy before mutating)."""
    return list(_parse(path))


def load(path: Path):
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, found {len(docs)}"
    return docs[0]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def package_dir(name: str) -> Path | None:
    """The installed package's directory, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def dockerfile_arg(name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert m, f"Dockerfile has no `ARG {name}=...`"
    return m.group(1).strip('"')


RAY_VERSION_FILES = [CLUSTER, K8S / "raycluster.yaml", K8S / "rayjob.yaml"]


# --------------------------------------------------------------------------------- every YAML


def test_every_yaml_under_infra_parses():
    paths = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    names = {rel(p) for p in paths}
    expected = {
        "infra/docker/compose.yaml",
        "infra/docker/compose.gpu.yaml",
        "infra/ray/cluster.yaml",
        "infra/k8s/raycluster.yaml",
        "infra/k8s/rayjob.yaml",
        "infra/k8s/postgres.yaml",
        "infra/k8s/mlflow.yaml",
        "infra/k8s/secrets.example.yaml",
        "infra/k8s/kustomization.yaml",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"
    for path in paths:
        docs = load_all(path)  # raises on a syntax error, in any document of the stream
        assert docs, f"{rel(path)} is empty"
        if rel(path) in expected:
            assert all(isinstance(doc, dict) for doc in docs), f"{rel(path)}: not a mapping"


# ------------------------------------------------------------------------------------ compose


def compose_services(path: Path = COMPOSE) -> dict:
    return load(path)["services"]


def env_of(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def test_compose_has_the_stack():
    services = compose_services()
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "dagstudy"} <= set(services)
    for name in ("mlflow", "ray-head", "ray-worker", "dagstudy"):
        build = services[name]["build"]
        assert build["dockerfile"] == "infra/docker/Dockerfile"
        assert (DOCKER / build["context"]).resolve() == ROOT
        assert build["args"]["VARIANT"] in ("cpu", "cuda")
    gpu = compose_services(COMPOSE_GPU)["ray-worker"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_published_ports_bind_loopback_only(path):
    for name, service in compose_services(path).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} binds all interfaces"
            else:
                assert isinstance(port, str), f"{name}: port {port!r} binds all interfaces"
                assert port.startswith("127.0.0.1:"), f"{name}: {port!r} is not on 127.0.0.1"
                plain = re.sub(r"\$\{[^}]*\}", "PORT", port)  # ${VAR:-5000} has a colon
                assert plain.count(":") == 2, f"{name}: {port!r} is not HOST_IP:HOST:CONTAINER"
    assert "network_mode" not in str(load(path)), "host networking would bypass the port binding"


def test_compose_secrets_are_files_read_through_file_variables():
    doc = load(COMPOSE)
    top = doc["secrets"]
    for name, spec in top.items():
        assert set(spec) == {"file"}, f"secret {name} must come from a file"
        assert spec["file"] == f"./secrets/{name}", f"secret {name}: {spec['file']}"
    for sname, service in doc["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(top), f"{sname}: unknown secrets {mounted - set(top)}"
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                assert key.endswith(("_FILE", "_PATH")), f"{sname}: {key} holds a literal secret"
            if key.endswith(("_FILE", "_PATH")) and str(value).startswith("/run/secrets/"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in mounted, f"{sname}: {key} reads {secret}, which is not mounted"
    pg = env_of(doc["services"]["postgres"])
    assert "POSTGRES_PASSWORD" not in pg
    assert pg["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # the generated values stay out of git and out of the build context
    ignore = (DOCKER / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore
    assert "infra/docker/secrets" in (ROOT / ".dockerignore").read_text().split()
    generated = re.search(r"for name in ([^;]+);", (DOCKER / "make-secrets.sh").read_text())
    assert set(generated.group(1).split()) == set(top), "make-secrets.sh must write every secret"


def test_compose_health_and_start_order():
    services = compose_services()
    for name in ("postgres", "mlflow", "ray-head", "ray-worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "/api/gcs_healthz" in " ".join(services["ray-head"]["healthcheck"]["test"])
    assert "/api/local_raylet_healthz" in " ".join(services["ray-worker"]["healthcheck"]["test"])
    deps = services["dagstudy"]["depends_on"]
    for name in ("postgres", "mlflow", "ray-head", "ray-worker"):
        assert deps[name]["condition"] == "service_healthy", name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_compose_dagstudy_service_runs_a_study_against_the_stack():
    services = compose_services()
    dag = services["dagstudy"]
    assert dag["entrypoint"] == ["dagstudy-env", "dagstudy-join", "dagstudy"]
    assert dag["command"][0] == "run" and "studies/" in dag["command"][1]
    env = env_of(dag)
    assert env["RAY_ADDRESS"] == "ray-head:6379"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["DAGSTUDY_HOME"]
    storage = env["DAGSTUDY_OPTUNA_STORAGE"]
    # driver named (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3), no password in it
    assert storage.startswith("postgresql+psycopg2://dagstudy@postgres:5432/")
    # Ray token auth on every Ray process, with the same token
    for name in ("ray-head", "ray-worker", "dagstudy"):
        e = env_of(services[name])
        assert e["RAY_AUTH_MODE"] == "token", name
        assert e["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token", name
    head = services["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    worker = services["ray-worker"]["command"]
    assert "--address=ray-head:6379" in worker and "--block" in worker


def test_compose_mlflow_server():
    mlflow = compose_services()["mlflow"]
    assert mlflow["entrypoint"] == ["dagstudy-env", "dagstudy-mlflow-server"]
    env = env_of(mlflow)
    hosts = env["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert "*" not in hosts and "mlflow:5000" in hosts
    for key in ("PGPASSWORD_FILE", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE",
                "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE"):
        assert env[key].startswith("/run/secrets/"), key
    assert any(v.endswith(":/data/mlflow-artifacts") for v in mlflow["volumes"])


# ------------------------------------------------------------------------ scripts and the image


def test_mlflow_server_script():
    text = (DOCKER / "mlflow-server.sh").read_text()
    for needle in ("--app-name basic-auth", "--backend-store-uri", "--artifacts-destination",
                   "--host 0.0.0.0", "--allowed-hosts", "MLFLOW_AUTH_CONFIG_PATH",
                   'backend_uri="postgresql+psycopg2://', 'auth_uri="postgresql+psycopg2://',
                   "admin_password = ${MLFLOW_AUTH_ADMIN_PASSWORD}"):
        assert needle in text, needle
    assert "umask 077" in text  # the auth config file holds the admin password


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_shell_scripts_parse(script):
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    path = DOCKER / script
    assert path.read_text().startswith("#!/bin/sh\n")
    proc = subprocess.run([sh, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_variants_user_and_entrypoint():
    text = DOCKERFILE.read_text()
    inst = dockerfile_instructions()
    assert dockerfile_arg("VARIANT") == "cpu"
    froms = [rest for word, rest in inst if word == "FROM"]
    assert any(f.endswith("AS torch-cpu") for f in froms)
    assert any(f.endswith("AS torch-cuda") for f in froms)
    assert froms[-1].startswith("torch-${VARIANT}"), "the final stage must follow VARIANT"
    assert dockerfile_arg("PYTHON_IMAGE").startswith("python:3.11")
    assert "https://download.pytorch.org/whl/cpu" in text  # the CPU wheel for VARIANT=cpu
    runs = [rest for word, rest in inst if word == "RUN"]
    assert any('".[postgres]"' in r and "ray[default]==${RAY_VERSION}" in r for r in runs)
    assert any('"mlflow[auth]"' in r for r in runs), "basic-auth needs mlflow[auth]"
    users = [rest for word, rest in inst if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "must run as non-root"
    entry = json.loads([rest for word, rest in inst if word == "ENTRYPOINT"][-1])
    assert entry[-1] == "dagstudy"
    workdir = [rest for word, rest in inst if word == "WORKDIR"][-1]
    assert any(r.endswith(f"{workdir}/studies") for w, r in inst if w == "COPY")


def test_dockerfile_copies_existing_files_the_context_lets_through():
    ignore = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    installed = {}
    for word, rest in dockerfile_instructions():
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        sources, dest = parts[:-1], parts[-1]
        for src in sources:
            # studies/ holds the study files the other parts of the project add
            if src != "studies":
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            for pattern in ignore:
                assert not fnmatch.fnmatch(src, pattern), f"COPY {src} is .dockerignored"
                assert not src.startswith(pattern.rstrip("/") + "/"), f"COPY {src}: {pattern}"
            if src.startswith("infra/docker/"):
                installed[Path(src).name] = dest
    for script, name in SCRIPTS.items():
        if name:
            assert installed.get(script) == f"/usr/local/bin/{name}", script


def test_one_ray_version_everywhere():
    version = dockerfile_arg("RAY_VERSION")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    docker = load(CLUSTER)["docker"]
    assert docker["head_image"] == f"rayproject/ray:{version}-py311-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{version}-py311-gpu"
    assert load(K8S / "raycluster.yaml")["spec"]["rayVersion"] == version
    assert load(K8S / "rayjob.yaml")["spec"]["rayClusterSpec"]["rayVersion"] == version
    for path in RAY_VERSION_FILES:
        for pinned in re.findall(r"ray\[default\]==([\d.]+)", path.read_text()):
            assert pinned == version, rel(path)


# ------------------------------------------------------------------------------ no passwords

FORBIDDEN = [
    "password1234",  # MLflow's old default admin password
    "postgres:postgres",
    "changeme",
    "change_me",
    "change-me",
    "admin:admin",
    "password123",
    "secret123",
    "hunter2",
    "letmein",
]
# user:password@ in a database URL, unless the password is a variable or a <placeholder>
URL_CREDENTIALS = re.compile(r"(postgres(?:ql)?|mysql)(\+\w+)?://[^\s:/@]+:([^\s@/]+)@")


def scanned_files() -> list[Path]:
    exempt = {INFRA / "README.md", SECRETS_EXAMPLE}
    files = [p for p in INFRA.rglob("*") if p.is_file() and p not in exempt]
    return [*files, ROOT / ".dockerignore"]


def test_no_literal_passwords_under_infra():
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        lower = text.lower()
        for word in FORBIDDEN:
            assert word not in lower, f"{rel(path)} contains {word!r}"
        for m in URL_CREDENTIALS.finditer(text):
            password = m.group(3)
            assert password[0] in "$<{", f"{rel(path)}: a password in a URL: {m.group(0)}"
    readme = (INFRA / "README.md").read_text()
    for m in URL_CREDENTIALS.finditer(readme):
        assert m.group(3)[0] in "$<{", f"infra/README.md: a password in a URL: {m.group(0)}"


def test_secrets_example_holds_placeholders_only():
    docs = load_all(SECRETS_EXAMPLE)
    assert docs and all(d["kind"] == "Secret" and d["apiVersion"] == "v1" for d in docs)
    for doc in docs:
        assert "data" not in doc, "use stringData placeholders, not base64 data"
        for key, value in doc["stringData"].items():
            assert value == PLACEHOLDER, f"{doc['metadata']['name']}.{key} is not a placeholder"
    assert "secrets.yaml" in (K8S / ".gitignore").read_text().split()


# ------------------------------------------------------------------------------- Kubernetes

API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
}
# Field names of KubeRay's v1 API types (ray-operator/apis/ray/v1: RayJobSpec, RayClusterSpec,
# HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions); a misspelt field would be dropped.
RAYJOB_SPEC = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
    "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes", "suspend",
}
RAYCLUSTER_SPEC = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
    "autoscalerOptions", "headServiceAnnotations", "suspend",
}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
    "template", "scaleStrategy", "suspend",
}
AUTOSCALER_OPTIONS = {
    "resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
    "securityContext", "idleTimeoutSeconds", "upscalingMode",
}
DAGSTUDY_ENV = {"DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "PGPASSWORD",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


def k8s_docs() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def test_k8s_kinds_and_api_versions():
    kinds = {}
    for path, doc in k8s_docs():
        assert doc["kind"] in API_VERSIONS, f"{rel(path)}: unexpected kind {doc['kind']}"
        assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], f"{rel(path)} {doc['kind']}"
        assert doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "the namespace is chosen at apply time"
        kinds.setdefault(doc["kind"], []).append(path.name)
        if doc["kind"] == "Secret":
            assert path == SECRETS_EXAMPLE, f"{rel(path)}: Secrets are never inlined"
    assert kinds["RayCluster"] == ["raycluster.yaml"] and kinds["RayJob"] == ["rayjob.yaml"]
    assert "StatefulSet" in kinds and "Deployment" in kinds and "PersistentVolumeClaim" in kinds
    kustomization = load(K8S / "kustomization.yaml")
    assert set(kustomization["resources"]) == {"postgres.yaml", "mlflow.yaml", "raycluster.yaml"}


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC, f"{where}: unknown {set(spec) - RAYCLUSTER_SPEC}"
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_OPTIONS, where
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP, f"{where}: unknown {set(head) - HEAD_GROUP}"
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker group"
    gpu_groups = []
    for group in [head, *groups]:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"{where}: non-string param"
        pod = group["template"]["spec"]
        ray_container = pod["containers"][0]  # KubeRay runs Ray in the first container
        assert ray_container["image"].startswith("dagstudy:"), where
        names = {e["name"] for e in ray_container["env"]}
        assert DAGSTUDY_ENV <= names, f"{where}: missing env {DAGSTUDY_ENV - names}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        if ray_container["resources"].get("limits", {}).get("nvidia.com/gpu"):
            gpu_groups.append(group)
    assert head["template"]["spec"]["containers"][0]["image"] == "dagstudy:cpu"
    assert head["rayStartParams"].get("num-cpus") == "0", "trials belong on the workers"
    for group in groups:
        assert set(group) <= WORKER_GROUP, f"{where}: unknown {set(group) - WORKER_GROUP}"
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
    assert gpu_groups, f"{where}: no GPU worker group"
    for group in gpu_groups:
        assert group["template"]["spec"]["containers"][0]["image"] == "dagstudy:cuda", where


def test_raycluster():
    (cluster,) = by_kind("RayCluster")
    check_ray_cluster_spec(cluster["spec"], "RayCluster")


def test_rayjob():
    (job,) = by_kind("RayJob")
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, f"unknown RayJob fields {set(spec) - RAYJOB_SPEC}"
    assert spec["entrypoint"] == "dagstudy run studies/mnist.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int)
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode",
                                                         "InteractiveMode")
    check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec")


def all_env(doc: dict) -> list[dict]:
    """Every container env entry anywhere in a manifest."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("env"), list) and ("image" in node or "name" in node):
                found.extend(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def test_k8s_secrets_referenced_never_inlined():
    example = {
        (d["metadata"]["name"], key) for d in load_all(SECRETS_EXAMPLE) for key in d["stringData"]
    }
    referenced = set()
    for path, doc in k8s_docs():
        for entry in all_env(doc):
            if SECRET_NAME.search(entry["name"]):
                assert "value" not in entry, f"{rel(path)}: {entry['name']} is a literal"
                ref = entry["valueFrom"]["secretKeyRef"]
                referenced.add((ref["name"], ref["key"]))
            if entry["name"] == "DAGSTUDY_OPTUNA_STORAGE":
                assert entry["value"].startswith("postgresql+psycopg2://dagstudy@dagstudy-postgres:")
    assert referenced, "no Secret referenced"
    assert referenced <= example, f"not in secrets.example.yaml: {referenced - example}"


def test_k8s_services_select_their_pods():
    workloads = by_kind("StatefulSet") + by_kind("Deployment")
    for service in by_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [
            w for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matches, f"Service {service['metadata']['name']} selects no pod"
        for w in workloads:
            assert w["spec"]["selector"]["matchLabels"].items() <= (
                w["spec"]["template"]["metadata"]["labels"].items()
            )
        ports = {p["name"] for w in matches for c in containers(w["spec"]["template"]["spec"])
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"


def test_k8s_postgres_and_mlflow():
    (pg,) = by_kind("StatefulSet")
    assert pg["spec"]["volumeClaimTemplates"], "PostgreSQL data needs a PVC"
    assert pg["spec"]["serviceName"] in {s["metadata"]["name"] for s in by_kind("Service")}
    (pg_container,) = pg["spec"]["template"]["spec"]["containers"]
    assert pg_container["image"].startswith("postgres:")
    assert pg_container["readinessProbe"]
    (init,) = (c for c in by_kind("ConfigMap") if c["metadata"]["name"].endswith("-init"))
    docker_sql = (DOCKER / "postgres-init" / "10-dagstudy-databases.sql").read_text()
    databases = set(re.findall(r"CREATE DATABASE (\w+);", docker_sql))
    assert databases == {"mlflow", "mlflow_auth"}
    assert set(re.findall(r"CREATE DATABASE (\w+);", "".join(init["data"].values()))) == databases

    (mlflow,) = by_kind("Deployment")
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["dagstudy-mlflow-server"]
    env = {e["name"]: e for e in container["env"]}
    assert "*" not in env["MLFLOW_ALLOWED_HOSTS"]["value"].split(",")
    for name in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in mlflow["spec"]["template"]["spec"]["volumes"]}
    assert claims <= {p["metadata"]["name"] for p in by_kind("PersistentVolumeClaim")}


# ----------------------------------------------------------------------- Ray cluster launcher


def test_cluster_launcher_validates_against_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    ray_dir = package_dir("ray")
    if ray_dir is None or not (ray_dir / "autoscaler" / "ray-schema.json").exists():
        pytest.skip("ray is not installed")
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(CLUSTER), schema)


def test_cluster_launcher_head_gpu_workers_and_setup():
    cfg = load(CLUSTER)
    assert cfg["provider"]["type"] in ("aws", "gcp")
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types
    assert not types[head].get("resources", {}).get("GPU"), "the head is a CPU node"
    workers = {k: v for k, v in types.items() if k != head}
    gpu = {k: v for k, v in workers.items() if v.get("resources", {}).get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, node in gpu.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= cfg["max_workers"], name
        assert node["max_workers"] > 0, name
    for node in types.values():
        assert node["node_config"]["InstanceType"] and node["node_config"]["ImageId"]

    install = re.compile(r'pip install .*"\$HOME/dagstudy\[postgres\]"')
    common = cfg.get("setup_commands", [])
    assert any(install.search(c) for c in common + cfg["head_setup_commands"]), "head"
    assert any(install.search(c) for c in common + cfg["worker_setup_commands"]), "workers"
    assert any("download.pytorch.org/whl/cpu" in c for c in cfg["head_setup_commands"])
    assert any("boto3" in c for c in cfg["head_setup_commands"]), "the AWS autoscaler needs it"

    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c
               for c in cfg["worker_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in " ".join(cfg["head_start_ray_commands"])

    # the repository, with studies/, on every node at ~/dagstudy
    assert cfg["file_mounts"] == {"~/dagstudy": "."}
    assert (ROOT / "pyproject.toml").exists()
    assert ".gitignore" in cfg["rsync_filter"]


# ---------------------------------------------- flags, checked against the installed packages


def used_flags(text: str, command: str) -> set[str]:
    """--flags that follow `command` on the same logical line (continuations joined)."""
    flags = set()
    for line in text.replace("\\\n", " ").splitlines():
        if command in line:
            tail = line.split(command, 1)[1]
            flags |= set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", tail))
    return flags


def ray_start_flags_in_infra() -> set[str]:
    flags = set()
    for path in (COMPOSE, CLUSTER, DOCKER / "dagstudy-join.sh"):
        text = path.read_text()
        flags |= used_flags(text, "ray start")
        if path == COMPOSE:
            for service in load(COMPOSE)["services"].values():
                cmd = service.get("command")
                if isinstance(cmd, list) and cmd[:2] == ["ray", "start"]:
                    flags |= {c.split("=")[0] for c in cmd[2:]}
    for spec in (load(K8S / "raycluster.yaml")["spec"],
                 load(K8S / "rayjob.yaml")["spec"]["rayClusterSpec"]):
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            flags |= {f"--{key}" for key in group["rayStartParams"]}
    flags |= used_flags(LOCAL_UP.read_text(), '"$RAY" start')
    return flags


def test_ray_start_flags_exist_in_installed_ray():
    ray_dir = package_dir("ray")
    if ray_dir is None:
        pytest.skip("ray is not installed")
    source = (ray_dir / "scripts" / "scripts.py").read_text()
    flags = ray_start_flags_in_infra()
    assert {"--head", "--address", "--block", "--dashboard-host"} <= flags
    missing = sorted(f for f in flags if f'"{f}"' not in source)
    assert not missing, f"`ray start` has no {missing} in ray {importlib.metadata.version('ray')}"


def test_mlflow_server_flags_and_env_exist_in_installed_mlflow():
    mlflow_dir = package_dir("mlflow")
    if mlflow_dir is None:
        pytest.skip("mlflow is not installed")
    # `mlflow server`'s options are declared in mlflow/cli (cli.py in older releases) and, for
    # those shared with other commands (--host, --port, --workers, ...), in utils/cli_args.py.
    source = "".join(
        p.read_text()
        for p in (mlflow_dir / "cli" / "__init__.py", mlflow_dir / "cli.py",
                  mlflow_dir / "utils" / "cli_args.py")
        if p.exists()
    )
    flags = used_flags((DOCKER / "mlflow-server.sh").read_text(), "mlflow server")
    flags |= {"--workers"}  # passed by compose and k8s as extra arguments
    local = used_flags(LOCAL_UP.read_text(), '"$MLFLOW" server')
    assert {"--backend-store-uri", "--allowed-hosts", "--artifacts-destination"} <= local
    flags |= local | {"--app-name"}  # up.sh passes it from an array (--mlflow-auth)
    assert {"--app-name", "--allowed-hosts", "--artifacts-destination"} <= flags
    missing = sorted(f for f in flags if f'"{f}"' not in source)
    version = importlib.metadata.version("mlflow")
    assert not missing, f"`mlflow server` has no {missing} in mlflow {version}"
    apps = {ep.name for ep in importlib.metadata.entry_points(group="mlflow.app")}
    assert "basic-auth" in apps
    env_source = (mlflow_dir / "environment_variables.py").read_text()
    for name in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert f'"{name}"' in env_source, name


# ------------------------------------------------------------- infra/local (no containers)
# tests/test_local_stack.py runs these scripts for real; here only what needs no servers.


@pytest.mark.parametrize("script", [LOCAL_UP, LOCAL_DOWN], ids=lambda p: p.name)
def test_local_scripts_parse_and_are_strict(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "ray stop" not in text.replace("never `ray stop`", "").replace("no `ray stop`", "")
    proc = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_local_up_usage_names_every_flag():
    """`up.sh --help` (which starts nothing) documents every flag the script accepts."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    text = LOCAL_UP.read_text()
    accepted = set(re.findall(r"^\s+(--[a-z-]+)(?:\|-h)?\)", text, re.MULTILINE))
    assert {"--host", "--no-ray", "--mlflow-auth", "--pg-port", "--mlflow-port"} <= accepted
    proc = subprocess.run([bash, str(LOCAL_UP), "--help"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0, proc.stderr
    missing = sorted(f for f in accepted if f not in proc.stdout)
    assert not missing, f"up.sh --help does not mention {missing}"
    bad = subprocess.run([bash, str(LOCAL_UP), "--no-such-flag"], capture_output=True,
                         text=True, timeout=10)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_local_up_binds_loopback_by_default():
    text = LOCAL_UP.read_text()
    assert re.search(r"^HOST=127\.0\.0\.1$", text, re.MULTILINE)
    assert "listen_addresses=$HOST" in text  # PostgreSQL
    assert '--host "$HOST"' in text  # MLflow
    assert '--node-ip-address "$HOST"' in text and '--dashboard-host "$HOST"' in text  # Ray
    assert "0.0.0.0" not in text


def local_auth_ini() -> dict[str, str]:
    """The basic_auth.ini that up.sh writes (its heredoc), as key -> value text."""
    m = re.search(r"<<INI\n(.*?)\nINI\n", LOCAL_UP.read_text(), re.DOTALL)
    assert m, "up.sh writes no basic_auth.ini heredoc"
    lines = m.group(1).splitlines()
    assert lines[0] == "[mlflow]"
    return dict(line.split(" = ", 1) for line in lines[1:])


def test_local_up_mlflow_basic_auth():
    """--mlflow-auth: the basic-auth app with a private config whose keys the installed
    MLflow reads, the secret key and config path through the environment, allowed hosts."""
    text = LOCAL_UP.read_text()
    ini = local_auth_ini()
    assert set(ini) == {"default_permission", "database_uri", "admin_username",
                        "admin_password", "authorization_function"}
    assert ini["admin_password"] == '$(cat "$MLFLOW_ADMIN_PW_FILE")'  # generated, never literal
    assert ini["database_uri"] == "$MLFLOW_AUTH_DB_URL"
    assert 'MLFLOW_AUTH_DB_URL="postgresql+psycopg2://$PG_USER@' in text  # no password in it
    assert ini["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert 'openssl rand -hex 16 >"$MLFLOW_ADMIN_PW_FILE"' in text
    assert 'openssl rand -hex 32 >"$MLFLOW_SECRET_KEY_FILE"' in text
    assert "MLFLOW_ARGS=(--app-name basic-auth)" in text
    assert '"MLFLOW_AUTH_CONFIG_PATH=$AUTH_INI"' in text
    assert "export MLFLOW_FLASK_SERVER_SECRET_KEY" in text
    # the secret key never becomes an argument (e.g. of `env`): only exported
    assert not re.search(r"MLFLOW_ENV=\([^)]*SECRET", text)
    assert '--allowed-hosts "$URL_HOST:$MLFLOW_PORT,localhost:$MLFLOW_PORT"' in text
    assert "umask 077" in text.split("<<INI")[0].rsplit("(", 1)[-1]  # the ini is private

    mlflow_dir = package_dir("mlflow")
    if mlflow_dir is None:
        pytest.skip("mlflow is not installed")
    auth = mlflow_dir / "server" / "auth"
    config_source = (auth / "config.py").read_text()
    for key in ini:
        assert f'"{key}"' in config_source, f"MLflow's auth config does not read {key}"
    permissions = set(re.findall(r'name="([A-Z_]+)"', (auth / "permissions.py").read_text()))
    assert ini["default_permission"] in permissions
    module, _, function = ini["authorization_function"].partition(":")
    assert module == "mlflow.server.auth"
    assert f"def {function}(" in (auth / "__init__.py").read_text()
