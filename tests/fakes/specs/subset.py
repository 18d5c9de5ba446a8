"""Cut a vendor's published OpenAPI document down to the operations and webhooks we use.

    python tests/fakes/specs/subset.py SOURCE OUT --op 'post /sms/3/messages' \
        --webhook receive-outbound-sms-message-reports-v3 [--server https://...]

SOURCE is the vendor's document (JSON or YAML) as published; OUT gets JSON with only the named
operations (their path-level parameters and servers too), the named `webhooks` / `x-webhooks`
entries, and every `#/components/...` entry they reach, each unchanged. Provenance of every
subset in this folder is in README.md beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def subset(doc: dict[str, Any], ops: list[str], webhooks: list[str]) -> dict[str, Any]:
    """The document with only `ops` ("method /path") and `webhooks`, plus what they reference."""
    out: dict[str, Any] = {k: doc[k] for k in ("openapi", "info", "servers", "security")
                           if k in doc}
    paths: dict[str, Any] = {}
    for op in ops:
        method, path = op.split(" ", 1)
        item = doc["paths"][path]
        kept = paths.setdefault(path, {k: v for k, v in item.items()
                                       if k in ("parameters", "servers", "summary")})
        kept[method] = item[method]
    out["paths"] = paths
    hooks_key = "webhooks" if "webhooks" in doc else "x-webhooks"
    if webhooks:
        out[hooks_key] = {name: doc[hooks_key][name] for name in webhooks}
    wanted: set[str] = set()
    _refs(out, wanted)
    done: set[str] = set()
    components: dict[str, dict[str, Any]] = {}
    while wanted - done:
        ref = sorted(wanted - done)[0]
        done.add(ref)
        target = _pointer(doc, ref)
        _, section, name = ref.removeprefix("#/").split("/", 2)
        components.setdefault(section, {})[name] = target
        _refs(target, wanted)
    if "securitySchemes" in doc.get("components", {}):
        components["securitySchemes"] = doc["components"]["securitySchemes"]
    out["components"] = {k: dict(sorted(v.items())) for k, v in sorted(components.items())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--op", action="append", default=[])
    parser.add_argument("--webhook", action="append", default=[])
    args = parser.parse_args()
    text = args.source.read_text(encoding="utf-8")
    doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    result = subset(doc, args.op, args.webhook)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
