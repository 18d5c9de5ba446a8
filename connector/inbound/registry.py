"""Every vendor's inbound adapter, by vendor name (the same names as connector.vendors)."""

from __future__ import annotations

from typing import Final

from connector.inbound import InboundAdapter
from connector.inbound.bird import BirdInbound
from connector.inbound.infobip import InfobipInbound
from connector.inbound.sinch import SinchInbound
from connector.inbound.twilio import TwilioInbound
from connector.inbound.vonage import VonageInbound

INBOUND: Final[dict[str, InboundAdapter]] = {
    "bird": BirdInbound(),
    "infobip": InfobipInbound(),
    "sinch": SinchInbound(),
    "twilio": TwilioInbound(),
    "vonage": VonageInbound(),
}
