"""The registry of vendors: adding one is its module plus one line here."""

from __future__ import annotations

from typing import Final

from connector.vendors.base import Vendor
from connector.vendors.twilio import Twilio

VENDORS: Final[dict[str, Vendor]] = {
    "twilio": Twilio(),
}
