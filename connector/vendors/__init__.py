"""The registry of vendors: adding one is its module plus one line here."""

from __future__ import annotations

from typing import Final

from connector.vendors.base import Vendor
from connector.vendors.bird import Bird
from connector.vendors.infobip import Infobip
from connector.vendors.sinch import Sinch
from connector.vendors.twilio import Twilio
from connector.vendors.vonage import Vonage

VENDORS: Final[dict[str, Vendor]] = {
    "bird": Bird(),
    "infobip": Infobip(),
    "sinch": Sinch(),
    "twilio": Twilio(),
    "vonage": Vonage(),
}
