"""The Containerfile and the manifests name the same image and agree on user, port, volume, command."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Final

from tests.test_manifests import (
    BASE,
    OVERLAY,
    load_kustomization,
    only_container,
    pod_spec,
    render,
    split_image,
    the,
    web,
    worker,
)

ROOT: Final = Path(__file__).resolve().parents[1]
CONTAINERFILE: Final = (ROOT / "Containerfile").read_text(encoding="utf-8")
IMAGE: Final = "channel-api-connector"
PLACEHOLDER: Final = "REPLACE_ME"


def instruction(name: str, stage: int = -1) -> str:
    """Arguments of the last `name` instruction in a stage (-1: the final stage)."""
    stages = re.split(r"^FROM\s", CONTAINERFILE, flags=re.MULTILINE)[1:]
    text = re.sub(r"\\\n\s*", " ", stages[stage])
    found = re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)
    assert found, f"no {name} in stage {stage} of the Containerfile"
    return str(found[-1]).strip()


def test_split_image_reads_tags_digests_and_registry_ports() -> None:
    assert split_image("channel-api-connector") == ("channel-api-connector", None, None)
    assert split_image("reg.example:5000/a/b:1.0@sha256:ab") == ("reg.example:5000/a/b", "1.0", "sha256:ab")
    assert split_image("reg.example:5000/a/b") == ("reg.example:5000/a/b", None, None)


def test_base_names_the_image_untagged_and_the_overlay_pins_it() -> None:
    for deployment in (web(render(BASE)), worker(render(BASE))):
        assert only_container(deployment)["image"] == IMAGE
    (entry,) = load_kustomization(OVERLAY)["images"]
    assert entry["name"] == IMAGE
    assert entry["newName"].endswith(f"/{IMAGE}")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert entry["newTag"] == version
    assert entry["digest"].startswith("sha256:") and PLACEHOLDER in entry["digest"]
    for deployment in (web(render(OVERLAY)), worker(render(OVERLAY))):
        image = only_container(deployment)["image"]
        assert image == f"{entry['newName']}:{version}@{entry['digest']}"


def test_the_build_commands_name_the_image() -> None:
    tagged = re.compile(rf"(podman build|docker build|buildah bud)[^\n]*-t \S*/{IMAGE}:")
    for path in ("Containerfile", "README.md", "manifests/README.md"):
        assert tagged.search((ROOT / path).read_text(encoding="utf-8")), path
    assert f"localhost/{IMAGE}:check" in (ROOT / "scripts/image-check.sh").read_text()


def test_image_runs_what_the_manifests_expect() -> None:
    docs = render(BASE)
    config = the(docs, "ConfigMap")["data"]
    container = only_container(web(docs))
    assert json.loads(instruction("CMD")) == container["command"] == ["connector", "serve"]
    uid, gid = instruction("USER").split(":")
    security = pod_spec(web(docs))["securityContext"]
    assert (int(uid), int(gid)) == (security["runAsUser"], security["runAsGroup"])
    assert json.loads(instruction("VOLUME")) == [config["CONNECTOR_DATA_DIR"]]
    env = instruction("ENV")
    assert f"CONNECTOR_DATA_DIR={config['CONNECTOR_DATA_DIR']}" in env
    assert f"CONNECTOR_HOST={config['CONNECTOR_HOST']}" in env
    assert f"CONNECTOR_PORT={config['CONNECTOR_PORT']}" in env
    assert instruction("EXPOSE") == str(container["ports"][0]["containerPort"])
    healthcheck = json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    assert healthcheck[0] == "python3" and "/healthz" in healthcheck[-1]


def test_final_stage_copies_only_the_virtualenv_and_installs_from_the_lock() -> None:
    final = re.split(r"^FROM\s", CONTAINERFILE, flags=re.MULTILINE)[-1]
    assert re.findall(r"^COPY .*$", final, flags=re.MULTILINE) == \
        ["COPY --from=build /opt/connector /opt/connector"]
    assert not re.search(r"^RUN .*(pip|uv|apt-get) ", final, flags=re.MULTILINE)
    build = re.sub(r"\\\n\s*", " ", re.split(r"^FROM\s", CONTAINERFILE, flags=re.MULTILINE)[1])
    installs = re.findall(r"(?:pip install|uv pip sync) [^&\n]*requirements/\S+", build)
    assert len(installs) == 2 and all("--require-hashes" in line for line in installs), installs
    assert "requirements/runtime.txt" in installs[1] and "--no-build" in installs[1]
    assert re.search(r"^ARG BASE=\S*python:3\.11-slim-bookworm$", CONTAINERFILE, flags=re.MULTILINE)
