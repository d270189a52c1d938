"""The Kubernetes manifests (deploy/kubernetes), validated without a cluster.

- Rendering: kustomize is not a Debian package, so ``render`` below builds what
  ``kubectl kustomize`` builds from the kustomization files, for exactly the features they use
  (resources, components, namespace, images, config map and secret generators); any other
  kustomization key fails the render instead of being silently ignored. Its output was
  compared once with ``kubectl kustomize --load-restrictor LoadRestrictionsNone`` (v5) on a
  machine that has it: the same objects, field for field.
- Schemas: every rendered object, and the stand-alone Job in deploy/kubernetes/jobs, against
  the Kubernetes API schemas ``kubernetes-validate`` bundles (strict: unknown fields fail),
  with sockets disabled, so the check provably needs no network. ServiceMonitor is a custom
  resource whose schema (the Prometheus Operator's CRD) is not bundled: it is checked for the
  fields it uses (the CRD's enums and patterns) and against the Services it selects.
- Policy: checkov's Kubernetes checks on deploy/kubernetes, with the skips of
  deploy/kubernetes/.checkov.yaml (each with its reason); and an exact check of the posture
  (non-root, no capability, seccomp, read-only root, limits) on every rendered pod.
- Cross-checks with docker-compose.yml: the same images, commands, ports, WATCHLOG_*
  settings, Redis scripts (the same files, not copies) and Prometheus jobs.

Every check is a function returning its problems; each has a negative control that breaks a
copy of the manifests and shows the same function catching it.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helpers import ROOT, require_tool
from watchlog.core.settings import SETTINGS_DOC

K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
FULL = K8S / "overlays" / "full"
JOBS = K8S / "jobs"
K8S_PROMETHEUS = K8S / "monitoring" / "prometheus.yml"
COMPOSE_PROMETHEUS = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
CHECKOV_CONFIG = K8S / ".checkov.yaml"
KUBE_VERSION = "1.31.0"  # the oldest release the manifests target (StatefulSet, HPA v2 …)
SETTINGS = {name for name, _, _ in SETTINGS_DOC}
Obj = dict[str, Any]
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "components",
                  "configMapGenerator", "secretGenerator", "generatorOptions", "images"}
CLUSTER_SCOPED = {"Namespace"}

# ---- rendering (the subset of kustomize the manifests use) -----------------------------


def _yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _generated(kind: str, gen: Obj, here: Path, sources: dict[str, Path]) -> Obj:
    data: dict[str, str] = {}
    for item in gen.get("files", []):
        key, _, rel = item.rpartition("=")
        path = (here / rel).resolve()
        sources[f"{gen['name']}/{key or path.name}"] = path
        data[key or path.name] = path.read_text()
    for item in gen.get("literals", []):
        key, _, value = item.partition("=")
        data[key] = value
    for rel in gen.get("envs", []):
        path = here / rel
        if not path.exists():  # secrets.env is not committed: render with its example
            path = path.with_name(path.name + ".example")
        data.update(_env_file(path))
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def pod_spec(obj: Obj) -> Obj | None:
    """The pod template's spec of a workload (None for other kinds)."""
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def render(path: Path, sources: dict[str, Path] | None = None) -> list[Obj]:
    """Build the kustomization in ``path`` as ``kubectl kustomize`` does (names unhashed)."""
    sources = {} if sources is None else sources
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(k) - KUSTOMIZE_KEYS
    assert not unknown, f"{path}: kustomization keys this renderer does not know: {unknown}"
    assert k.get("generatorOptions", {"disableNameSuffixHash": True}) == {
        "disableNameSuffixHash": True}, "the manifests name generated objects unhashed"
    objs: list[Obj] = []
    for rel in k.get("resources", []):
        target = path / rel
        objs += render(target, sources) if target.is_dir() else _yaml_docs(target)
    for gen in k.get("configMapGenerator", []):
        objs.append(_generated("ConfigMap", gen, path, sources))
    for gen in k.get("secretGenerator", []):
        objs.append(_generated("Secret", gen, path, sources))
    for rel in k.get("components", []):
        objs += render(path / rel, sources)
    for image in k.get("images", []):
        for c in (c for o in objs for c in containers(o)):
            name, _, tag = c["image"].partition(":")
            if name == image["name"]:
                c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objs


def test_the_default_kustomization_is_the_base_and_full_adds_the_components() -> None:
    base = render(BASE)
    assert render(K8S) == base
    names = {(o["kind"], o["metadata"]["name"]) for o in render(FULL)}
    added = names - {(o["kind"], o["metadata"]["name"]) for o in base}
    assert ("Deployment", "producer-client") in added and ("Deployment", "consumer-client") in added
    assert ("ServiceMonitor", "redis-node") in added
    assert not any(o["kind"] in ("ServiceMonitor",) or o["metadata"]["name"].endswith("-client")
                   for o in base), "the base runs without the optional parts"


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


@pytest.fixture(scope="module")
def sources() -> dict[str, Path]:
    out: dict[str, Path] = {}
    render(FULL, out)
    return out


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return render(FULL) + [d for f in sorted(JOBS.glob("*.yaml")) for d in _yaml_docs(f)]


@pytest.fixture
def objs(rendered: list[Obj]) -> list[Obj]:
    """The full overlay plus the stand-alone Jobs (a copy each test may mutate)."""
    return copy.deepcopy(rendered)


@pytest.fixture(scope="module")
def compose() -> Obj:
    data: Obj = yaml.safe_load(COMPOSE.read_text())  # anchors and << merges resolved
    return data


def _break(objs: list[Obj], kind: str, name: str, fn: Callable[[Obj], None]) -> list[Obj]:
    out = copy.deepcopy(objs)
    fn(find(out, kind, name))
    return out


def _container(obj: Obj, index: int = -1) -> Obj:
    return containers(obj)[index]


# ---- schemas ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket opened in the test fails: the schemas must come from the package."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def schema_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for o in objs:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a custom resource: servicemonitor_problems
        try:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{o['kind']}/{o['metadata']['name']}: {e.message}")
    return problems


def test_every_manifest_matches_the_kubernetes_schemas_offline(
        objs: list[Obj], no_network: None) -> None:
    kinds = {o["kind"] for o in objs}
    assert {"StatefulSet", "Service", "Job", "Deployment", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "NetworkPolicy", "Secret", "ConfigMap"} <= kinds
    assert schema_problems(objs) == []
    # The schemas are files inside the installed package, not a download.
    bundled = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (bundled / "v1.31.0-local-strict" / "statefulset-apps-v1.json").is_file()


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type", "bad probe"])
def test_schema_check_catches_a_broken_manifest(objs: list[Obj], no_network: None,
                                                breakage: str) -> None:
    def misspell(o: Obj) -> None:
        o["spec"]["template"]["spec"]["containres"] = o["spec"]["template"]["spec"].pop(
            "containers")

    def wrong_type(o: Obj) -> None:
        o["spec"]["replicas"] = "three"

    def bad_probe(o: Obj) -> None:
        _container(o)["readinessProbe"]["httpGet"]["port"] = {"name": "http"}

    fn, kind, name = {"misspelled field": (misspell, "StatefulSet", "redis-node"),
                      "wrong type": (wrong_type, "Deployment", "producer-app"),
                      "bad probe": (bad_probe, "Deployment", "consumer-app")}[breakage]
    broken = find(_break(objs, kind, name, fn), kind, name)
    assert schema_problems([broken])  # the one broken object: each schema load costs


# ServiceMonitor: the fields used, with the enums and patterns of the operator's CRD
# (monitoring.coreos.com/v1), and each endpoint tied to a port of a Service it selects.
SM_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "relabelings",
                    "metricRelabelings", "params", "scheme"}
SM_RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus",
                   "replacement", "action"}
SM_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
              "lowercase", "uppercase", "keepequal", "dropequal"}
SM_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def servicemonitor_problems(objs: list[Obj]) -> list[str]:
    problems = []
    services = [o for o in objs if o["kind"] == "Service"]
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        name = sm["metadata"]["name"]
        if sm["apiVersion"] != "monitoring.coreos.com/v1" or set(sm) != {
                "apiVersion", "kind", "metadata", "spec"}:
            problems.append(f"{name}: not a monitoring.coreos.com/v1 object")
        if set(sm["spec"]) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}:
            problems.append(f"{name}: unknown spec fields")
        want = sm["spec"]["selector"]["matchLabels"]
        selected = [s for s in services
                    if want.items() <= s["metadata"].get("labels", {}).items()]
        ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        if not selected:
            problems.append(f"{name}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if set(ep) - SM_ENDPOINT_KEYS:
                problems.append(f"{name}: unknown endpoint fields {set(ep) - SM_ENDPOINT_KEYS}")
            if ep.get("port") not in ports:
                problems.append(f"{name}: port {ep.get('port')!r} is no port of {want}")
            for key in ("interval", "scrapeTimeout"):
                if key in ep and not SM_DURATION.match(ep[key]):
                    problems.append(f"{name}: {key} {ep[key]!r}")
            for r in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
                if set(r) - SM_RELABEL_KEYS or r.get("action", "replace").lower() not in SM_ACTIONS:
                    problems.append(f"{name}: bad relabeling {r}")
    return problems


def test_servicemonitors_use_known_fields_and_select_real_service_ports(
        objs: list[Obj]) -> None:
    assert [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert servicemonitor_problems(objs) == []


@pytest.mark.parametrize("breakage", ["unknown port", "bad interval", "bad action"])
def test_servicemonitor_check_catches_a_broken_one(objs: list[Obj], breakage: str) -> None:
    def edit(sm: Obj) -> None:
        ep = sm["spec"]["endpoints"][0]
        if breakage == "unknown port":
            ep["port"] = "web"
        elif breakage == "bad interval":
            ep["interval"] = "5 seconds"
        else:
            ep["metricRelabelings"][0]["action"] = "delete"
    assert servicemonitor_problems(_break(objs, "ServiceMonitor", "redis-node", edit))


# ---- security posture --------------------------------------------------------------------


def _container_problems(where: str, c: Obj) -> list[str]:
    problems = []
    sc = c.get("securityContext", {})
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
        problems.append(f"{where}: capabilities not all dropped")
    if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
        problems.append(f"{where}: privilege escalation allowed")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: writable root filesystem")
    if "runAsUser" in sc and sc["runAsUser"] < 10000:
        problems.append(f"{where}: runs as uid {sc['runAsUser']}")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        if set(res.get(part, {})) != {"cpu", "memory"}:
            problems.append(f"{where}: {part} lack cpu or memory")
    return problems


def posture_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for o in objs:
        spec = pod_spec(o)
        if spec is None:
            continue
        name = f"{o['kind']}/{o['metadata']['name']}"
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) < 10000:
            problems.append(f"{name}: not run as a non-root uid >= 10000")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{name}: shares a host namespace")
        for c in containers(o):
            problems += _container_problems(f"{name}/{c['name']}", c)
    return problems


def test_every_pod_is_non_root_read_only_without_capabilities_and_limited(
        objs: list[Obj]) -> None:
    assert posture_problems(objs) == []
    namespace = find(objs, "Namespace", "watchlog")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("breakage", ["root", "capability", "writable root", "no limits",
                                      "no seccomp"])
def test_posture_check_catches_a_weakened_pod(objs: list[Obj], breakage: str) -> None:
    def edit(o: Obj) -> None:
        spec, c = o["spec"]["template"]["spec"], _container(o)
        if breakage == "root":
            spec["securityContext"]["runAsUser"] = 0
        elif breakage == "capability":
            c["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
        elif breakage == "writable root":
            del c["securityContext"]["readOnlyRootFilesystem"]
        elif breakage == "no limits":
            del c["resources"]["limits"]
        else:
            del spec["securityContext"]["seccompProfile"]
    assert posture_problems(_break(objs, "StatefulSet", "redis-node", edit))


CHECKOV_SKIP_REASON = re.compile(r"^\s*-\s*(CKV\w*_\d+)\s*#\s*\S", re.M)


def checkov(*directories: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """Run checkov's Kubernetes checks on each directory with the project's skip list, at
    once (a start costs ~10 s); return each run's exit code and failed checks."""
    procs = [subprocess.Popen(
        [require_tool("checkov"), "-d", str(d), "--framework", "kubernetes", "--config-file",
         str(CHECKOV_CONFIG), "--output", "json", "--quiet", "--compact", "--skip-download"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for d in directories]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert out.strip(), err[-2000:]
        data = json.loads(out)
        reports = data if isinstance(data, list) else [data]
        failed = [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]
        results.append((proc.returncode, failed))
    return results


def test_checkov_skip_list_is_small_and_every_skip_has_a_reason() -> None:
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    skips = config["skip-check"]
    assert len(skips) <= 6
    reasons = set(CHECKOV_SKIP_REASON.findall(CHECKOV_CONFIG.read_text()))
    assert reasons == set(skips), "every skipped check has a `# reason` on its line"


@pytest.mark.slow
def test_checkov_passes_on_the_manifests_and_fails_a_privileged_copy(tmp_path: Path) -> None:
    # Negative control, alongside: a copy whose producer runs privileged, as root.
    broken_dir = tmp_path / "kubernetes"
    shutil.copytree(K8S, broken_dir)
    app = broken_dir / "base" / "producer-app.yaml"
    text = app.read_text().replace("allowPrivilegeEscalation: false",
                                   "allowPrivilegeEscalation: true\n            privileged: true")
    app.write_text(text.replace("runAsNonRoot: true", "runAsNonRoot: false"))
    (ok_code, ok_failed), (broken_code, broken_failed) = checkov(K8S, broken_dir)
    assert [(f["check_id"], f["file_path"]) for f in ok_failed] == [] and ok_code == 0
    caught = {f["check_id"] for f in broken_failed if f["file_path"] == "/base/producer-app.yaml"}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= caught and broken_code != 0


# ---- Redis reachable only from the APIs, the exporter and the admin Jobs ------------------


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        ok = {"In": value in e.get("values", []), "NotIn": value not in e.get("values", []),
              "Exists": e["key"] in labels, "DoesNotExist": e["key"] not in labels}[e["operator"]]
        if not ok:
            return False
    return True


def redis_clients(objs: list[Obj], port: int = 6379) -> set[str]:
    """The workloads whose pods the NetworkPolicies let reach a Redis node on ``port``."""
    node = find(objs, "StatefulSet", "redis-node")["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in objs if p["kind"] == "NetworkPolicy"
                and _selects(p["spec"]["podSelector"], node)]
    assert policies, "no NetworkPolicy selects the Redis pods: everything reaches them"
    allowed = set()
    for o in objs:
        if pod_spec(o) is None:
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        for rule in (r for p in policies for r in p["spec"].get("ingress", [])):
            peers = rule.get("from")
            ports = {pt.get("port") for pt in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            if peers is None or any(
                    "podSelector" in peer and "namespaceSelector" not in peer
                    and _selects(peer["podSelector"], labels) for peer in peers) or any(
                    "ipBlock" in peer or "namespaceSelector" in peer for peer in peers):
                allowed.add(o["metadata"]["name"])
    return allowed


def test_only_the_apis_the_exporter_and_admin_jobs_reach_redis(objs: list[Obj]) -> None:
    assert redis_clients(objs) == {"producer-app", "consumer-app", "redis-exporter",
                                   "redis-cluster-init", "redis-cluster-rebalance",
                                   "redis-node"}
    assert redis_clients(objs, 16379) == {"redis-node"}  # the unauthenticated cluster bus


@pytest.mark.parametrize("breakage", ["open rule", "client label"])
def test_network_check_catches_an_opened_policy(objs: list[Obj], breakage: str) -> None:
    def edit(p: Obj) -> None:
        if breakage == "open rule":
            p["spec"]["ingress"].append({"ports": [{"port": 6379, "protocol": "TCP"}]})
        else:
            p["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0][
                "values"].append("producer-client")
    assert "producer-client" in redis_clients(_break(objs, "NetworkPolicy", "redis-node", edit))


# ---- APIs: probes, autoscaler, disruption budget; secrets --------------------------------


def api_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for name in ("producer-app", "consumer-app"):
        c = _container(find(objs, "Deployment", name))
        if c["readinessProbe"]["httpGet"]["path"] != "/ready":
            problems.append(f"{name}: readiness is not /ready")
        if c["livenessProbe"]["httpGet"]["path"] != "/health":
            problems.append(f"{name}: liveness is not /health")
        hpa = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"
               and o["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1",
                                                   "kind": "Deployment", "name": name}]
        if len(hpa) != 1 or hpa[0]["spec"]["minReplicas"] < 2:
            problems.append(f"{name}: no autoscaler from 2 replicas")
        labels = find(objs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        pdb = [o for o in objs if o["kind"] == "PodDisruptionBudget"
               and _selects(o["spec"]["selector"], labels)]
        if len(pdb) != 1 or pdb[0]["spec"].get("minAvailable", 0) < 1:
            problems.append(f"{name}: no disruption budget keeping a pod")
    return problems


def test_apis_have_probes_an_autoscaler_and_a_disruption_budget(objs: list[Obj]) -> None:
    assert api_problems(objs) == []


@pytest.mark.parametrize("breakage", ["probe", "autoscaler", "budget"])
def test_api_check_catches_a_missing_piece(objs: list[Obj], breakage: str) -> None:
    if breakage == "probe":
        objs = _break(objs, "Deployment", "consumer-app",
                      lambda o: _container(o)["readinessProbe"]["httpGet"].update(path="/health"))
    else:
        kind = {"autoscaler": "HorizontalPodAutoscaler", "budget": "PodDisruptionBudget"}[breakage]
        objs = [o for o in objs if not (o["kind"] == kind
                                        and o["metadata"]["name"] == "producer-app")]
    assert api_problems(objs)


SECRET_NAME = re.compile(r"PASSWORD|TOKEN|_KEY$|AUTH$")


def secret_problems(objs: list[Obj]) -> list[str]:
    """Secrets only in the Secret, and every reference to it names a key it has."""
    problems = []
    secret = find(objs, "Secret", "watchlog-secrets")
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        for key in cm.get("data", {}):
            if SECRET_NAME.search(key) and key != "WATCHLOG_AUTH":
                problems.append(f"ConfigMap/{cm['metadata']['name']} holds {key}")
    for o in objs:
        for c in containers(o):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secret["data"]:
                    problems.append(f"{o['metadata']['name']}: {ref['key']} not in the Secret")
                if "value" in env and SECRET_NAME.search(env["name"]) and env["value"]:
                    problems.append(f"{o['metadata']['name']}: {env['name']} set in clear")
    return problems


def test_tokens_and_passwords_live_in_the_secret_only(objs: list[Obj]) -> None:
    assert secret_problems(objs) == []
    example = _env_file(BASE / "secrets.env.example")
    compose_env = _env_file(ROOT / ".env.example")
    assert set(example) <= set(compose_env), "the Secret's keys are compose's .env names"
    assert set(example.values()) <= set(compose_env.values())  # change-me: refused by Redis
    ignored = subprocess.run(["git", "check-ignore", "-q", str(BASE / "secrets.env")],
                             cwd=ROOT, check=False)
    assert ignored.returncode == 0, "deploy/kubernetes/base/secrets.env must be ignored by git"


def test_secret_check_catches_a_password_in_a_configmap(objs: list[Obj]) -> None:
    broken = _break(objs, "ConfigMap", "watchlog-settings",
                    lambda cm: cm["data"].update(WATCHLOG_REDIS_PASSWORD="x" * 16))
    assert secret_problems(broken)


# ---- compose and Kubernetes run the same thing ---------------------------------------


def _default(value: str) -> str:
    """Compose's ``${VAR:-default}`` (or ``${VAR:?msg}``) interpolation, unset: the default."""
    return re.sub(r"\$\{[A-Z_]+(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(1) or "", value)


# Kubernetes name of each compose service that has a counterpart.
COUNTERPARTS = {"producer-app": ("Deployment", "producer-app"),
                "consumer-app": ("Deployment", "consumer-app"),
                "producer-client": ("Deployment", "producer-client"),
                "consumer-client": ("Deployment", "consumer-client"),
                "redis-exporter": ("Deployment", "redis-exporter"),
                "redis-node-1": ("StatefulSet", "redis-node"),
                "redis-cluster-init": ("Job", "redis-cluster-init")}
# Names that differ on purpose: Kubernetes' pod and node addresses, and where the scripts are
# mounted (compose mounts the rebalance script at the image's default path).
K8S_ONLY_ENV = {"POD_NAME", "REDIS_ANNOUNCE_HOSTNAME", "REDIS_CONF_DIR", "REDIS_DATA_DIR",
                "REDIS_REBALANCE_SCRIPT"}
ADDRESS_ENV = {"WATCHLOG_REDIS_URL", "WATCHLOG_PRODUCER_URL", "WATCHLOG_CONSUMER_URL",
               "REDIS_MASTERS", "REDIS_REPLICAS", "REDIS_INIT_TIMEOUT", "REDIS_EXTRA_MASTERS"}


def _k8s_env(objs: list[Obj], c: Obj) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for src in c.get("envFrom", []):
        env.update(find(objs, "ConfigMap", src["configMapRef"]["name"])["data"])
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")  # None: from the Secret
    return env


def sameness_problems(objs: list[Obj], compose: Obj) -> list[str]:
    problems = []
    for service, (kind, name) in COUNTERPARTS.items():
        svc = compose["services"][service]
        c = _container(find(objs, kind, name))
        where = f"{service} vs {kind}/{name}"
        if _default(svc["image"]) != c["image"]:
            problems.append(f"{where}: image {_default(svc['image'])} != {c['image']}")
        run = [_default(a) for a in (svc.get("command") or svc.get("entrypoint") or [])]
        k8s_run = c.get("command", []) + c.get("args", [])
        if service.startswith("redis-node") or service == "redis-cluster-init":
            run, k8s_run = run[:1], k8s_run[:1]  # sh, with the same script (redis_scripts_*)
        if run != k8s_run:
            problems.append(f"{where}: runs {k8s_run}, compose {run}")
        ports = {int(p) for p in svc.get("expose", [])}
        k8s_ports = {p["containerPort"] for p in c.get("ports", [])}
        if ports - k8s_ports:
            problems.append(f"{where}: ports {k8s_ports} lack compose's {ports}")
        env = {k: _default(str(v)) for k, v in (svc.get("environment") or {}).items()}
        k8s_env = _k8s_env(objs, c)
        if set(env) != set(k8s_env) - K8S_ONLY_ENV:
            problems.append(f"{where}: settings differ: {set(env) ^ (set(k8s_env) - K8S_ONLY_ENV)}")
        for key, value in env.items():
            unknown = key.startswith("WATCHLOG_") and key not in SETTINGS
            if unknown:
                problems.append(f"{where}: {key} is no setting")
            if key in k8s_env and k8s_env[key] is not None and key not in ADDRESS_ENV \
                    and k8s_env[key] != value:
                problems.append(f"{where}: {key}={k8s_env[key]!r}, compose {value!r}")
    return problems


def test_compose_and_kubernetes_run_the_same_images_commands_ports_and_settings(
        objs: list[Obj], compose: Obj) -> None:
    assert sameness_problems(objs, compose) == []


@pytest.mark.parametrize("breakage", ["image", "port", "setting name", "setting value",
                                      "command"])
def test_sameness_check_catches_a_drift(objs: list[Obj], compose: Obj, breakage: str) -> None:
    def edit(o: Obj) -> None:
        c = _container(o)
        if breakage == "image":
            c["image"] = "watchlog-producer-app:other"
        elif breakage == "port":
            c["ports"][0]["containerPort"] = 8080
        elif breakage == "setting name":
            c["env"].append({"name": "WATCHLOG_WORKER", "value": "4"})
        elif breakage == "setting value":
            c["env"].append({"name": "WATCHLOG_FAULT_PRESET", "value": "seed"})
        else:
            c["command"] = ["watchlog", "serve", "consumer"]
    assert sameness_problems(_break(objs, "Deployment", "producer-app", edit), compose)


def script_problems(objs: list[Obj], sources: dict[str, Path], compose: Obj) -> list[str]:
    """The Redis pods run compose's own files (same paths), mounted from redis-scripts."""
    problems = []
    wanted = {c["source"]: ROOT / compose["configs"][c["source"]]["file"]
              for svc in ("redis-node-1", "redis-cluster-init")
              for c in compose["services"][svc].get("configs", [])}
    used = {str(p) for p in sources.values()}
    for config, path in wanted.items():
        if str(path.resolve()) not in used:
            problems.append(f"compose config {config} ({path}) is not what Kubernetes mounts")
    scripts = find(objs, "ConfigMap", "redis-scripts")["data"]
    for name, src in sources.items():
        cm, _, key = name.partition("/")
        if cm == "redis-scripts" and scripts.get(key) != src.read_text():
            problems.append(f"redis-scripts/{key} differs from {src}")
    for kind, name, script in (("StatefulSet", "redis-node", "entrypoint.sh"),
                               ("Job", "redis-cluster-init", "cluster-init.sh")):
        o = find(objs, kind, name)
        c = _container(o)
        mount = next((m["mountPath"] for m in c["volumeMounts"] if m["name"] == "scripts"), "")
        volume = next(v for v in pod_spec(o)["volumes"] if v["name"] == "scripts")  # type: ignore[index]
        if c["command"] != ["sh", f"{mount}/{script}"] or \
                volume.get("configMap", {}).get("name") != "redis-scripts":
            problems.append(f"{kind}/{name} does not run {script} from redis-scripts")
    # No copy of a script anywhere under deploy/: the one file is the source of truth.
    for copy_ in K8S.rglob("*"):
        if copy_.is_file() and any(copy_.read_bytes() == p.read_bytes() for p in wanted.values()):
            problems.append(f"{copy_} is a copy of a compose script")
    return problems


def test_redis_pods_run_the_compose_scripts_not_copies(
        objs: list[Obj], sources: dict[str, Path], compose: Obj) -> None:
    assert script_problems(objs, sources, compose) == []


def test_script_check_catches_a_rewritten_copy(objs: list[Obj], sources: dict[str, Path],
                                               compose: Obj, tmp_path: Path) -> None:
    rewritten = tmp_path / "entrypoint.sh"
    rewritten.write_text((ROOT / "docker/redis/entrypoint.sh").read_text() + "# tuned\n")
    swapped = {**sources, "redis-scripts/entrypoint.sh": rewritten}
    broken = _break(objs, "ConfigMap", "redis-scripts",
                    lambda cm: cm["data"].update({"entrypoint.sh": rewritten.read_text()}))
    problems = script_problems(broken, swapped, compose)
    assert any("not what Kubernetes mounts" in p for p in problems)


def _jobs(config: Obj) -> dict[str, Obj]:
    return {j["job_name"]: j for j in config["scrape_configs"]}


def monitoring_problems(k8s: Obj, compose_cfg: Obj, objs: list[Obj]) -> list[str]:
    """The same jobs, intervals, paths, metric relabelling and rules as compose's config."""
    problems = []
    for key in ("global", "rule_files"):
        if k8s[key] != compose_cfg[key]:
            problems.append(f"{key} differs")
    mine, theirs = _jobs(k8s), _jobs(compose_cfg)
    if set(mine) != set(theirs):
        problems.append(f"jobs differ: {set(mine) ^ set(theirs)}")
    for name in set(mine) & set(theirs):
        for key in ("metrics_path", "metric_relabel_configs", "scrape_interval"):
            if mine[name].get(key) != theirs[name].get(key):
                problems.append(f"job {name}: {key} differs")
    monitors = {r["replacement"] for o in objs if o["kind"] == "ServiceMonitor"
                for ep in o["spec"]["endpoints"] for r in ep.get("relabelings", [])
                if r.get("targetLabel") == "job"}
    if monitors != set(theirs) - {"prometheus"}:
        problems.append(f"ServiceMonitor jobs differ: {monitors ^ (set(theirs) - {'prometheus'})}")
    return problems


def test_prometheus_jobs_match_compose_and_the_servicemonitors(objs: list[Obj]) -> None:
    k8s = yaml.safe_load(K8S_PROMETHEUS.read_text())
    compose_cfg = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    assert monitoring_problems(k8s, compose_cfg, objs) == []


@pytest.mark.parametrize("breakage", ["renamed job", "interval", "servicemonitor job"])
def test_monitoring_check_catches_a_drift(objs: list[Obj], breakage: str) -> None:
    k8s = yaml.safe_load(K8S_PROMETHEUS.read_text())
    compose_cfg = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    if breakage == "renamed job":
        k8s["scrape_configs"][1]["job_name"] = "producer-app"
    elif breakage == "interval":
        k8s["global"]["scrape_interval"] = "15s"
    else:
        objs = _break(objs, "ServiceMonitor", "redis-node", lambda sm: sm["spec"]["endpoints"][
            0]["relabelings"][-1].update(replacement="redis-node"))
    assert monitoring_problems(k8s, compose_cfg, objs)


def test_promtool_accepts_the_kubernetes_prometheus_config(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    text = K8S_PROMETHEUS.read_text().replace("/etc/prometheus/rules/*.yml",
                                              str(ROOT / "monitoring/prometheus/rules/*.yml"))
    config.write_text(text)
    proc = subprocess.run([require_tool("promtool"), "check", "config", "--syntax-only",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _walk(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
    elif isinstance(node, str):
        yield node


def test_manifests_are_plain_yaml_without_template_syntax() -> None:
    for path in K8S.rglob("*.yaml"):
        for value in _walk(_yaml_docs(path)):
            assert "{{" not in value and "${" not in value.replace("${1}", ""), (path, value)


# ---- the containers' own scripts, run as the pods would run them ---------------------


def _pod_env(objs: list[Obj], c: Obj, pod: str, secret_values: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet gives container ``c`` of pod ``pod`` ($(VAR) expanded)."""
    env: dict[str, str] = {"PATH": "/usr/bin:/bin"}
    for e in c.get("env", []):
        source = e.get("valueFrom", {})
        if "fieldRef" in source:
            value = {"metadata.name": pod}[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            value = secret_values[source["secretKeyRef"]["key"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        env[e["name"]] = value
    return env


SECRET_VALUES = {"REDIS_ADMIN_PASSWORD": "admin-password-123",
                 "WATCHLOG_REDIS_PASSWORD": "app-password-123",
                 "REDIS_EXPORTER_PASSWORD": "exporter-password-123"}


def announced(objs: list[Obj], tmp_path: Path) -> str:
    """Run the entrypoint as pod redis-node-2 (render only); return what it announces."""
    sts = find(objs, "StatefulSet", "redis-node")
    c = _container(sts)
    env = _pod_env(objs, c, "redis-node-2", SECRET_VALUES)
    env.update(REDIS_CONF_DIR=str(tmp_path / "conf"), REDIS_DATA_DIR=str(tmp_path / "data"),
               REDIS_RENDER_ONLY="1", PATH=f"{Path(require_tool('redis-server')).parent}:"
                                          "/usr/bin:/bin")
    script = sources_of(objs)["entrypoint.sh"]
    subprocess.run(["sh", str(script)], env=env, check=True, timeout=30, capture_output=True)
    conf = (tmp_path / "conf" / "redis.conf").read_text()
    return re.search(r"^cluster-announce-hostname (\S+)$", conf, re.M).group(1)  # type: ignore[union-attr]


def sources_of(objs: list[Obj]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    render(BASE, out)
    return {k.partition("/")[2]: v for k, v in out.items() if k.startswith("redis-scripts/")}


def test_redis_pods_announce_their_stable_dns_name(objs: list[Obj], tmp_path: Path) -> None:
    name = announced(objs, tmp_path)
    service = find(objs, "Service", "redis-node")
    assert name == f"redis-node-2.{service['metadata']['name']}"
    assert service["spec"]["clusterIP"] == "None"  # headless: a DNS name per pod
    assert find(objs, "StatefulSet", "redis-node")["spec"]["serviceName"] == "redis-node"


def test_announce_check_catches_a_pod_announcing_its_bare_hostname(
        objs: list[Obj], tmp_path: Path) -> None:
    broken = _break(objs, "StatefulSet", "redis-node", lambda o: _container(o).update(
        env=[e for e in _container(o)["env"] if e["name"] != "REDIS_ANNOUNCE_HOSTNAME"]))
    assert announced(broken, tmp_path) != "redis-node-2.redis-node"


def password_map(objs: list[Obj], tmp_path: Path) -> dict[str, str]:
    """Run the exporter's init container script; return the password map it writes."""
    exporter = find(objs, "Deployment", "redis-exporter")
    init = exporter["spec"]["template"]["spec"]["initContainers"][0]
    script = init["command"][2].replace("/etc/redis-exporter", str(tmp_path))
    env = _pod_env(objs, init, "redis-exporter-0", SECRET_VALUES)
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    data: dict[str, str] = json.loads((tmp_path / "passwords.json").read_text())
    return data


def scrape_targets(pods: int = 3) -> set[str]:
    """The ?target= the plain Prometheus config and the ServiceMonitor give each Redis pod."""
    job = _jobs(yaml.safe_load(K8S_PROMETHEUS.read_text()))["redis"]
    rule = next(r for r in job["relabel_configs"] if r.get("target_label") == "__param_target")
    srv = [f"redis-node-{i}.redis-node.watchlog.svc.cluster.local:6379" for i in range(pods)]
    return {re.sub(rule["regex"], rule["replacement"].replace("${1}", r"\1"), a) for a in srv}


def test_exporter_has_the_password_of_every_node_prometheus_asks_for(
        objs: list[Obj], tmp_path: Path) -> None:
    passwords = password_map(objs, tmp_path)
    targets = scrape_targets(pods=16)
    assert targets <= set(passwords), targets - set(passwords)
    assert set(passwords.values()) == {SECRET_VALUES["REDIS_EXPORTER_PASSWORD"]}
    sm = find(objs, "ServiceMonitor", "redis-node")["spec"]["endpoints"][0]["relabelings"]
    assert sm[0]["replacement"] == "redis://${1}.redis-node:6379"  # pod name -> same target
    assert (tmp_path / "passwords.json").stat().st_mode & 0o077 == 0


def test_password_map_check_catches_names_prometheus_does_not_use(
        objs: list[Obj], tmp_path: Path) -> None:
    broken = _break(objs, "Deployment", "redis-exporter", lambda o: o["spec"]["template"][
        "spec"]["initContainers"][0]["command"].__setitem__(2, o["spec"]["template"]["spec"][
            "initContainers"][0]["command"][2].replace(".redis-node:6379", ":6379")))
    assert not scrape_targets() <= set(password_map(broken, tmp_path))


def inline_scripts(objs: list[Obj]) -> dict[str, str]:
    """Every `sh -c SCRIPT` of a container command or exec probe, by where it is."""
    out = {}
    for o in objs:
        for c in containers(o):
            for what, argv in [("command", c.get("command", []))] + [
                    (p, c[p]["exec"]["command"]) for p in ("readinessProbe", "livenessProbe")
                    if "exec" in c.get(p, {})]:
                if argv[:2] == ["sh", "-c"]:
                    out[f"{o['metadata']['name']}/{c['name']}/{what}"] = argv[2]
    return out


def shellcheck_problems(scripts: dict[str, str], tmp_path: Path) -> list[str]:
    problems = []
    for n, (where, script) in enumerate(sorted(scripts.items())):
        path = tmp_path / f"script-{n}.sh"
        path.write_text(script)
        proc = subprocess.run([require_tool("shellcheck"), "--shell", "sh", str(path)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode:
            problems.append(f"{where}: {proc.stdout}")
    return problems


def test_inline_shell_of_the_pods_passes_shellcheck(objs: list[Obj], tmp_path: Path) -> None:
    scripts = inline_scripts(objs)
    assert len(scripts) >= 3  # the exporter's password map, the Redis probes
    assert shellcheck_problems(scripts, tmp_path) == []


def test_shellcheck_check_catches_an_unquoted_secret(objs: list[Obj], tmp_path: Path) -> None:
    scripts = inline_scripts(objs)
    where = next(k for k in scripts if k.startswith("redis-exporter/password-map"))
    scripts[where] = scripts[where].replace('"$i" "$REDIS_EXPORTER_PASSWORD"',
                                            "$i $REDIS_EXPORTER_PASSWORD")
    assert shellcheck_problems({where: scripts[where]}, tmp_path)
