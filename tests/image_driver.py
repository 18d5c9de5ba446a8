"""Drive the built image (scripts/image-check.sh): serve, health check, one message and its report.

Runs `connector serve` inside a buildah working container (chroot isolation, so it shares the
host's loopback), with the image's own environment, user and command; the vendor fake and the
report receiver are the test suite's (`tests/fakes/`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.ports import listen_port

SID = "AC" + "1" * 32
TOKEN = "image-check-token-" + "k" * 16
REPORT_SECRET = "image-check-report-secret-" + "r" * 16


class CheckFailed(Exception):
    """One step of the check failed; the message says which and why."""


def image_config(buildah: list[str], image: str) -> dict[str, Any]:
    out = subprocess.run([*buildah, "inspect", "--type", "image", image], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    config: dict[str, Any] = json.loads(out)["Docker"]["config"]
    return config


def wait_healthy(url: str, serve: subprocess.Popen[bytes], deadline: float) -> None:
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if serve.poll() is not None:
                raise CheckFailed(f"`connector serve` exited with {serve.returncode} before /healthz")
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise CheckFailed(f"{url}/healthz did not answer 200 in time")


def run_healthcheck(buildah: list[str], container: str, config: dict[str, Any],
                    env: dict[str, str]) -> None:
    """The image's own HEALTHCHECK command, run inside the container as the runtime would."""
    test = (config.get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] != "CMD":
        raise CheckFailed(f"the image has no exec-form HEALTHCHECK: {test!r}")
    flags = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    result = subprocess.run([*buildah, "run", "--isolation", "chroot", *flags, container, "--",
                             *test[1:]], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"HEALTHCHECK {shlex.join(test[1:])} failed: {result.stderr.strip()}")


def send_one(url: str, twilio: FakeTwilio, receiver: ReportReceiver, timeout: float) -> None:
    body = {"sender": "ImageCheck", "recipient": "00447911123456", "message": "hello from the image",
            "request_id": "image-check-1", "custom_data": "image=check",
            "callback_url": receiver.url("image")}
    headers = {"Chan-Account-Sid": SID, "Chan-Auth-Token": TOKEN, "Chan-Base-Url": twilio.base_url}
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        answer = client.post(f"{url}/sms/send", json=body, headers=headers)
    if answer.status_code != 200:
        raise CheckFailed(f"/sms/send answered {answer.status_code}: {answer.text}")
    (message,) = twilio.messages
    callback = twilio.send_status(message["sid"], "delivered", timeout=timeout)
    if callback.status_code != 204:
        raise CheckFailed(f"the status callback answered {callback.status_code}: {callback.text}")
    try:
        (event,) = receiver.wait_for(1, timeout=timeout)
    except AssertionError as exc:
        raise CheckFailed(f"no delivery report arrived: {exc}") from None
    if (event.get("status"), event.get("custom_data")) != ("delivered", "image=check"):
        raise CheckFailed(f"unexpected report: {event!r}")
    print(f"image-check: report arrived: {json.dumps(event)}", flush=True)


def stop(serve: subprocess.Popen[bytes]) -> None:
    if serve.poll() is None:
        # uvicorn re-raises SIGTERM after its graceful shutdown: buildah reports that as "killed".
        print("image-check: stopping connector serve (SIGTERM)", flush=True)
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)


def check(buildah: list[str], image: str, container: str, timeout: float) -> None:
    config = image_config(buildah, image)
    if config.get("Cmd") != ["connector", "serve"] or config.get("User") in (None, "", "0", "root"):
        raise CheckFailed(f"image command/user: {config.get('Cmd')!r} as {config.get('User')!r}")
    if "/var/lib/connector" not in (config.get("Volumes") or {}):
        raise CheckFailed(f"/var/lib/connector is not a declared volume: {config.get('Volumes')!r}")
    port = listen_port()
    env = {"CONNECTOR_PORT": str(port), "CONNECTOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "CONNECTOR_REPORT_SECRET": REPORT_SECRET, "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "1",
           "CONNECTOR_ALLOW_HTTP": "1", "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
           "CONNECTOR_REPORT_LINGER": "0"}
    flags = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    # The image's CMD, user and working directory; CONNECTOR_HOST stays the image's 0.0.0.0.
    command = [*buildah, "run", "--isolation", "chroot", "--network", "host", *flags, container,
               "--", *config["Cmd"]]
    print(f"image-check: {shlex.join(command)}", flush=True)
    serve = subprocess.Popen(command, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, serve, time.monotonic() + timeout)
        run_healthcheck(buildah, container, config, {"CONNECTOR_PORT": str(port)})
        print("image-check: /healthz answers, and so does the image's HEALTHCHECK", flush=True)
        with FakeTwilio({SID: TOKEN}) as twilio, ReportReceiver(REPORT_SECRET) as receiver:
            send_one(url, twilio, receiver, timeout)
    finally:
        stop(serve)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buildah", required=True, help="buildah command with storage options")
    parser.add_argument("--image", required=True)
    parser.add_argument("--container", required=True, help="a working container of the image")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        check(shlex.split(args.buildah), args.image, args.container, args.timeout)
    except CheckFailed as exc:
        print(f"image-check: FAILED: {exc}", file=sys.stderr)
        return 1
    print("image-check: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
