"""The Kubernetes manifests: schema-valid, render as intended, and agree with the code.

Rendering uses a small kustomize subset implemented here (resources, patches, replicas,
namePrefix, namespace, labels), so the tests run without kubectl; when kubectl or kustomize is
installed its rendering must equal ours.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from connector.settings import REFERENCE, Settings

MANIFESTS: Final = Path(__file__).resolve().parents[1] / "manifests"
BASE: Final = MANIFESTS / "base"
OVERLAY: Final = MANIFESTS / "overlays" / "example-tenant"
SECRET_TEMPLATE: Final = BASE / "secret.example.yaml"
MONITORING: Final = MANIFESTS / "monitoring"

# Schemas shipped with kubernetes-validate; the manifests target this Kubernetes release.
K8S_VERSION: Final = "1.32.0"

KNOWN_VARIABLES: Final = {s.name for s in REFERENCE} | {"PROMETHEUS_MULTIPROC_DIR"}
REQUIRED_SECRETS: Final = {
    "CONNECTOR_SECRET_KEY",
    "CONNECTOR_REPORT_SECRET",
    "CONNECTOR_ADMIN_KEY",
    "CONNECTOR_CALLBACK_BASIC_AUTH",
    "CONNECTOR_PLATFORM_KEY",
    "CONNECTOR_DATABASE_URL",
}
PLACEHOLDER: Final = "REPLACE_ME"
UVICORN_GRACEFUL_SECONDS: Final = 15

Doc = dict[str, Any]


# --- loading -------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def yaml_files() -> list[Path]:
    # monitoring/ holds Prometheus rules and their PrometheusRule, not kustomize resources:
    # tests/test_monitoring.py checks them with promtool.
    files = sorted(p for p in [*MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml")]
                   if MONITORING not in p.parents)
    assert files, "no manifests found"
    return files


def is_kustomization(path: Path) -> bool:
    return path.name in ("kustomization.yaml", "kustomization.yml", "Kustomization")


def resource_files() -> list[Path]:
    return [p for p in yaml_files() if not is_kustomization(p)]


def load_kustomization(directory: Path) -> Doc:
    (doc,) = load_docs(directory / "kustomization.yaml")
    assert doc.get("kind") == "Kustomization", directory
    return doc


# --- a kustomize subset --------------------------------------------------------------------

_SUPPORTED_FIELDS: Final = {
    "apiVersion", "kind", "resources", "patches", "replicas", "namePrefix", "namespace", "labels",
    "images",
}


class RenderError(AssertionError):
    """The kustomization asks for something missing (or for a feature this loader lacks)."""


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise RenderError(f"expected exactly one {kind}/{name} to patch, found {len(found)}")
    return found[0]


def _merge(target: Doc, patch: Doc, where: str = "") -> None:
    """Strategic merge for maps of scalars/maps; lists would need merge keys, so refuse them."""
    for key, value in patch.items():
        if isinstance(value, list):
            raise RenderError(f"list at {where}/{key}: this loader only merges maps")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, f"{where}/{key}")
        else:
            target[key] = copy.deepcopy(value)


def _json6902(target: Doc, operations: list[Doc]) -> None:
    for op in operations:
        if op["op"] not in ("add", "replace"):
            raise RenderError(f"unsupported JSON patch op {op['op']!r}")
        *parents, leaf = [part.replace("~1", "/").replace("~0", "~")
                          for part in op["path"].lstrip("/").split("/")]
        node: Any = target
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "replace" and leaf not in node:
            raise RenderError(f"replace of missing path {op['path']}")
        node[leaf] = copy.deepcopy(op["value"])


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a port in the registry host is not a tag)."""
    rest, _, digest = reference.partition("@")
    slash = rest.rfind("/")
    name, colon, tag = rest.rpartition(":") if rest.rfind(":") > slash else (rest, "", "")
    return name, (tag if colon else None), (digest or None)


def _set_images(docs: list[Doc], images: list[Doc]) -> None:
    """kustomize `images:` (v5: a newTag and a digest together give name:tag@digest)."""
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        spec = pod_spec(doc)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag, digest = split_image(container["image"])
            for entry in images:
                if entry["name"] == name:
                    tag = entry.get("newTag", tag)
                    digest = entry.get("digest", digest)
                    container["image"] = entry.get("newName", name) + (f":{tag}" if tag else "") + \
                        (f"@{digest}" if digest else "")


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def _rename_references(docs: list[Doc], renamed: dict[tuple[str, str], str]) -> None:
    def fix(ref: Doc | None, kind: str, key: str = "name") -> None:
        if ref is not None and (kind, ref.get(key)) in renamed:
            ref[key] = renamed[kind, ref[key]]

    for doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler":
            fix(doc["spec"]["scaleTargetRef"], doc["spec"]["scaleTargetRef"]["kind"])
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        spec = pod_spec(doc)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for source in container.get("envFrom", []):
                fix(source.get("configMapRef"), "ConfigMap")
                fix(source.get("secretRef"), "Secret")
            for var in container.get("env", []):
                value_from = var.get("valueFrom", {})
                fix(value_from.get("configMapKeyRef"), "ConfigMap")
                fix(value_from.get("secretKeyRef"), "Secret")
        for volume in spec.get("volumes", []):
            fix(volume.get("configMap"), "ConfigMap")
            fix(volume.get("secret"), "Secret", "secretName")


_SELECTOR_PATHS: Final[dict[str, list[tuple[str, ...]]]] = {
    "Deployment": [("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels")],
    "Service": [("spec", "selector")],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
}


def _add_labels(doc: Doc, pairs: dict[str, str], include_selectors: bool) -> None:
    doc["metadata"].setdefault("labels", {}).update(pairs)
    if not include_selectors:
        return
    for path in _SELECTOR_PATHS.get(doc["kind"], []):
        node = doc
        for part in path:
            node = node.setdefault(part, {})
        node.update(pairs)


def render(directory: Path) -> list[Doc]:
    """Build a kustomization directory the way `kubectl kustomize` would (for what we use)."""
    kustomization = load_kustomization(directory)
    unsupported = set(kustomization) - _SUPPORTED_FIELDS
    if unsupported:
        raise RenderError(f"{directory}: loader does not implement {sorted(unsupported)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if not path.exists():
            raise RenderError(f"{directory}: resource {entry} does not exist")
        docs += render(path) if path.is_dir() else copy.deepcopy(load_docs(path))

    for patch in kustomization.get("patches", []):
        if "path" in patch:
            (body,) = load_docs(directory / patch["path"])
            target = _find(docs, body["kind"], body["metadata"]["name"])
            _merge(target, body)
        else:
            target = _find(docs, patch["target"]["kind"], patch["target"]["name"])
            _json6902(target, yaml.safe_load(patch["patch"]))
    for replicas in kustomization.get("replicas", []):
        _find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    _set_images(docs, kustomization.get("images", []))

    prefix = kustomization.get("namePrefix", "")
    if prefix:
        renamed = {(d["kind"], d["metadata"]["name"]): prefix + d["metadata"]["name"] for d in docs}
        for doc in docs:
            doc["metadata"]["name"] = prefix + doc["metadata"]["name"]
        _rename_references(docs, renamed)
    if "namespace" in kustomization:
        for doc in docs:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    for entry in kustomization.get("labels", []):
        for doc in docs:
            _add_labels(doc, entry["pairs"], entry.get("includeSelectors", False))
    return docs


def by_identity(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    keyed = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    assert len(keyed) == len(docs), "duplicate resources in a rendering"
    return keyed


# --- helpers over rendered documents -------------------------------------------------------


def the(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} named *{suffix}, found {len(found)}"
    return found[0]


def web(docs: list[Doc]) -> Doc:
    return the(docs, "Deployment", "connector-web")


def worker(docs: list[Doc]) -> Doc:
    return the(docs, "Deployment", "connector-worker")


def only_container(deployment: Doc) -> Doc:
    (container,) = pod_spec(deployment)["containers"]
    container_doc: Doc = container
    return container_doc


def secret_template() -> Doc:
    (doc,) = load_docs(SECRET_TEMPLATE)
    assert doc["kind"] == "Secret"
    return doc


def secret_keys(doc: Doc) -> set[str]:
    return set(doc.get("stringData", {})) | set(doc.get("data", {}))


RENDERINGS: Final = [pytest.param(BASE, id="base"), pytest.param(OVERLAY, id="example-tenant")]


# --- 1. schema validation ------------------------------------------------------------------


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("directory", RENDERINGS)
def test_rendered_resources_validate_too(directory: Path) -> None:
    for doc in render(directory):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(web(render(BASE)))
    only_container(broken)["livenessProbe"]["httpGet"]["pth"] = "/healthz"  # typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_manifest_file_is_used() -> None:
    """A YAML file no kustomization mentions is dead (or forgotten); only the Secret template
    is left out on purpose, so that `kubectl apply -k` never overwrites the real Secret."""
    used: set[Path] = set()
    for kustomization_file in MANIFESTS.rglob("kustomization.yaml"):
        directory = kustomization_file.parent
        kustomization = load_kustomization(directory)
        used |= {(directory / r).resolve() for r in kustomization.get("resources", [])}
        used |= {(directory / p["path"]).resolve()
                 for p in kustomization.get("patches", []) if "path" in p}
    assert SECRET_TEMPLATE.resolve() not in used
    unused = {p.resolve() for p in resource_files()} - used - {SECRET_TEMPLATE.resolve()}
    assert not unused, f"manifests no kustomization uses: {sorted(map(str, unused))}"


# --- 2. rendering the overlay --------------------------------------------------------------


def test_overlay_renders_every_base_resource_for_the_tenant() -> None:
    overlay = load_kustomization(OVERLAY)
    base_docs, docs = render(BASE), render(OVERLAY)
    assert sorted((d["kind"], overlay["namePrefix"] + d["metadata"]["name"]) for d in base_docs) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    for doc in docs:
        assert doc["metadata"]["namespace"] == overlay["namespace"]
        for entry in overlay["labels"]:
            assert entry["pairs"].items() <= doc["metadata"]["labels"].items()


def test_overlay_patches_take_effect() -> None:
    overlay = load_kustomization(OVERLAY)
    base_docs, docs = render(BASE), render(OVERLAY)
    (patch,) = load_docs(OVERLAY / "configmap-patch.yaml")
    base_config = the(base_docs, "ConfigMap")["data"]
    config = the(docs, "ConfigMap")["data"]
    assert config == {**base_config, **patch["data"]}
    assert config["CONNECTOR_PUBLIC_URL"] != base_config["CONNECTOR_PUBLIC_URL"]
    assert config["CONNECTOR_PUBLIC_URL"].startswith("https://")
    (replicas,) = overlay["replicas"]
    assert replicas["name"] == worker(base_docs)["metadata"]["name"]
    assert worker(docs)["spec"]["replicas"] == replicas["count"]
    assert the(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3


@pytest.mark.parametrize("directory", RENDERINGS)
def test_rendered_references_resolve(directory: Path) -> None:
    docs = render(directory)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for deployment in (web(docs), worker(docs)):
        sources = only_container(deployment)["envFrom"]
        config_refs = [s["configMapRef"] for s in sources if "configMapRef" in s]
        secret_refs = [s["secretRef"] for s in sources if "secretRef" in s]
        assert config_refs and all(("ConfigMap", r["name"]) in names for r in config_refs)
        # The Secret is created out of band under the template's name (see README).
        assert [r["name"] for r in secret_refs] == [secret_template()["metadata"]["name"]]
        assert all(r.get("optional") is not True for r in config_refs + secret_refs)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = the(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", web(docs)["metadata"]["name"])
    web_labels = web(docs)["spec"]["template"]["metadata"]["labels"].items()
    worker_labels = worker(docs)["spec"]["template"]["metadata"]["labels"].items()
    for selector in (the(docs, "Service")["spec"]["selector"],
                     the(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= web_labels
        assert not selector.items() <= worker_labels


@pytest.mark.parametrize("directory", RENDERINGS)
def test_rendered_configuration_is_accepted_by_the_settings_module(directory: Path) -> None:
    config = the(render(directory), "ConfigMap")["data"]
    settings = Settings.from_env(config)
    assert settings.host == "0.0.0.0"
    assert settings.log_format == "json"
    assert str(settings.data_dir) == config["CONNECTOR_DATA_DIR"]


def test_loader_rejects_a_patch_whose_target_is_missing(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(BASE)], "patches": [{"path": "patch.yaml"}],
    }))
    (overlay / "patch.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no-such-config"},
        "data": {"CONNECTOR_LOG_LEVEL": "debug"},
    }))
    with pytest.raises(RenderError, match="ConfigMap/no-such-config"):
        render(overlay)


def _external_renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.mark.parametrize("directory", RENDERINGS)
def test_loader_agrees_with_kustomize(directory: Path) -> None:
    command = _external_renderer()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert by_identity(theirs) == by_identity(render(directory))


# --- 3. variables and secrets --------------------------------------------------------------


def test_every_variable_set_is_one_the_settings_module_reads() -> None:
    seen: dict[str, Path] = {}
    for path in resource_files():
        for doc in load_docs(path):
            if doc["kind"] == "ConfigMap":
                seen |= dict.fromkeys(doc.get("data", {}), path)
            elif doc["kind"] == "Secret":
                seen |= dict.fromkeys(secret_keys(doc), path)
            elif doc["kind"] == "Deployment":
                spec = pod_spec(doc)
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    seen |= {var["name"]: path for var in container.get("env", [])}
                    assert all("prefix" not in s for s in container.get("envFrom", [])), path
    assert seen
    unknown = {name: str(path) for name, path in seen.items() if name not in KNOWN_VARIABLES}
    assert not unknown, f"variables connector.settings does not read: {unknown}"


def test_secret_template_lists_the_secrets_without_values() -> None:
    template = secret_template()
    assert REQUIRED_SECRETS <= secret_keys(template)
    assert not template.get("data"), "use stringData placeholders, not encoded values"
    for key, value in template["stringData"].items():
        assert value == "" or PLACEHOLDER in value, f"{key} looks like a real value"
    assert "kubectl" in SECRET_TEMPLATE.read_text() and "create secret" in SECRET_TEMPLATE.read_text()


def test_secrets_appear_nowhere_but_the_secret() -> None:
    for path in resource_files():
        for doc in load_docs(path):
            if doc["kind"] == "ConfigMap":
                assert not REQUIRED_SECRETS & set(doc.get("data", {})), path
            elif doc["kind"] == "Deployment":
                for container in pod_spec(doc)["containers"]:
                    for var in container.get("env", []):
                        assert var["name"] not in REQUIRED_SECRETS or "valueFrom" in var, path


# --- 4. probes, ports, commands, shutdown --------------------------------------------------


def _container_port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(match, int)
    return match


@pytest.mark.parametrize("directory", RENDERINGS)
def test_web_runs_serve_with_probes_on_its_port(directory: Path) -> None:
    docs = render(directory)
    deployment = web(docs)
    container = only_container(deployment)
    config = the(docs, "ConfigMap")["data"]
    assert container["command"] == ["connector", "serve"]
    assert "args" not in container
    (port,) = container["ports"]
    assert port["name"] == "http"
    assert port["containerPort"] == int(config["CONNECTOR_PORT"]) == 8000
    assert config["CONNECTOR_HOST"] == "0.0.0.0"
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        check = container[probe]["httpGet"]
        assert check["path"] == path, probe
        assert _container_port(container, check["port"]) == port["containerPort"], probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    service_port = the(docs, "Service")["spec"]["ports"][0]
    assert _container_port(container, service_port["targetPort"]) == port["containerPort"]
    assert the(docs, "Service")["spec"].get("type", "ClusterIP") == "ClusterIP"
    # The worker Deployment delivers reports; the HPA owns the web replica count.
    assert {"name": "CONNECTOR_DISPATCHER", "value": "false"} in container["env"]
    assert "replicas" not in deployment["spec"]


@pytest.mark.parametrize("directory", RENDERINGS)
def test_worker_runs_the_dispatcher(directory: Path) -> None:
    container = only_container(worker(render(directory)))
    assert container["command"] == ["connector", "worker"]
    assert "args" not in container
    assert all(var["name"] != "CONNECTOR_DISPATCHER" for var in container.get("env", []))


@pytest.mark.parametrize("directory", RENDERINGS)
def test_shutdown_outlasts_the_graceful_timeout(directory: Path) -> None:
    docs = render(directory)
    for deployment in (web(docs), worker(docs)):
        spec = pod_spec(deployment)
        pre_stop = only_container(deployment).get("lifecycle", {}).get("preStop", {})
        delay = pre_stop.get("sleep", {}).get("seconds", 0)
        assert spec["terminationGracePeriodSeconds"] > UVICORN_GRACEFUL_SECONDS + delay


@pytest.mark.parametrize("directory", RENDERINGS)
def test_pods_are_locked_down_with_a_writable_data_dir(directory: Path) -> None:
    docs = render(directory)
    data_dir = the(docs, "ConfigMap")["data"]["CONNECTOR_DATA_DIR"]
    for deployment in (web(docs), worker(docs)):
        spec = pod_spec(deployment)
        container = only_container(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert "emptyDir" in volumes[mount["name"]]
        assert not mount.get("readOnly", False)


@pytest.mark.parametrize("directory", RENDERINGS)
def test_web_scales_on_cpu_and_keeps_a_pod_through_disruptions(directory: Path) -> None:
    docs = render(directory)
    hpa = the(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    pdb = the(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    # minAvailable must stay below the HPA floor, or node drains block forever.
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
