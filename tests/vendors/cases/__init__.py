"""Per-vendor inputs for the contract suite: what only that vendor's documentation can say."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connector import http
from connector.vendors.base import Callback


@dataclass(frozen=True)
class Failure:
    """A signed status callback reporting a failure; `opted_out`: whether the vendor's code in
    it means the recipient opted out (its documented opt-out code) or not (a plain failure)."""

    label: str
    callback: Callable[[], Callback]
    opted_out: bool


@dataclass(frozen=True)
class Case:
    """What the contract suite needs from one vendor to hold its adapter to the contract.

    settings: working Chan-* settings, secrets included, default (documented) host.
    secrets: the values in `settings` that must never leak.
    number: how the recipient +447911123456 must appear in the send request.
    accepted: a documented success answer to a send; its vendor id is `vendor_id`.
    rejected: a documented permanent refusal and the vendor code it carries.
    callback: builds a correctly signed status callback carrying a vendor status.
    signed: False when the vendor signs nothing (Infobip; Sinch and Vonage without their
        optional secret): the connector's URL token is then the whole check.
    signs_url: whether the vendor's signature covers the URL called, too.
    failures: failure callbacks with and without the vendor's opt-out code (none with it when
        the vendor documents no such code).
    """

    settings: Mapping[str, str]
    secrets: tuple[str, ...]
    number: str
    accepted: http.Response
    vendor_id: str
    rejected: tuple[http.Response, str]
    callback: Callable[[str], Callback]
    signed: bool = True
    signs_url: bool = True  # False: the signature covers the body only (Sinch, Vonage)
    failures: tuple[Failure, ...] = ()
