"""GET/POST /sms/verify: do the Chan-* credentials work at the vendor? (SPEC section 1)."""

from __future__ import annotations

from typing import Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector.api.send import vendor_settings
from connector.errors import ConnectorError
from connector.services import Services
from connector.vendors.base import read_answer

log = structlog.get_logger("connector.verify")
_encode = msgspec.json.Encoder()
MMS_NOTES: Final = {
    True: " and the account can send MMS.",
    False: ", but the account cannot send MMS: /mms/send will send the fallback text as SMS.",
    None: "; whether the account can send MMS shows on the first MMS send.",
}


async def verify(request: Request, mms: bool = False) -> Response:
    """200 when one cheap authenticated vendor call works; otherwise the error's status with a
    `message` the platform shows on its integration screen."""
    services: Services = request.app.state.services
    settings = services.settings
    vendor_name = None
    try:
        vendor, config = vendor_settings(request, settings.default_vendor)
        vendor_name = vendor.name
        structlog.contextvars.bind_contextvars(vendor=vendor.name)
        if "base-url" in config:
            await services.guard.check(config["base-url"], "Chan-Base-Url",
                                       vendor.hosts + settings.vendor_hosts)
        answer = await services.http.send(vendor.build_verify(config), settings.vendor_timeout,
                                          what=vendor.name)
        read_answer(vendor.parse_verify, answer, vendor.name)
        await services.accounts.remember(vendor.name, config, services.box.seal(config))
        can_mms = vendor.mms_capability(config, answer) if mms else None
    except ConnectorError as exc:
        log.info("credentials_refused", code=exc.code)
        body = {"ok": False, "vendor": vendor_name, "message": exc.message,
                "error": {"code": exc.code, "message": exc.message,
                          "retryable": exc.retryable, "vendor_code": exc.vendor_code}}
        return Response(_encode.encode(body), status_code=exc.status, headers=exc.headers(),
                        media_type="application/json")
    works: dict[str, object] = {"ok": True, "vendor": vendor.name,
                                "message": f"The {vendor.name} credentials work."}
    if mms:  # /mms/verify: also whether the account can send MMS, where the vendor tells
        works["mms"] = can_mms
        works["message"] = f"The {vendor.name} credentials work" + MMS_NOTES[can_mms]
    return Response(_encode.encode(works), media_type="application/json")
