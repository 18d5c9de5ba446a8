"""Destination and sender rules checked before any vendor call (a doomed message is a 422)."""

from __future__ import annotations

from typing import Final

import phonenumbers
from phonenumbers import PhoneNumberType

from connector.errors import RefusedMessage
from connector.msisdn import is_number
from connector.settings import Settings

# Only the unambiguous type: FIXED_LINE_OR_MOBILE numbers (e.g. all of NANP) may be mobiles.
_LANDLINE: Final = PhoneNumberType.FIXED_LINE


class Rules:
    def __init__(self, settings: Settings) -> None:
        self.regions = frozenset(r for r in settings.allowed_regions if not r.isdigit())
        self.calling_codes = frozenset(int(r) for r in settings.allowed_regions if r.isdigit())
        self.refuse_landlines = settings.refuse_landlines
        self.alpha_blocked = frozenset(settings.alpha_sender_blocked_regions)

    def check(self, number: phonenumbers.PhoneNumber, sender: str,
              region: str | None = None) -> str:
        """The recipient's region (ISO code), or raise RefusedMessage saying why not.

        `region`: the number's region_code_for_number when the caller has it already (it
        costs a dozen pattern matches to find again)."""
        region = region or phonenumbers.region_code_for_number(number) or "ZZ"
        if (self.regions or self.calling_codes) and not (
                region in self.regions or number.country_code in self.calling_codes):
            raise RefusedMessage(f"destination region {region} is not permitted here",
                                 code="region_not_permitted")
        if self.refuse_landlines and phonenumbers.number_type(number) == _LANDLINE:
            raise RefusedMessage("recipient is a fixed-line number", code="landline")
        if region in self.alpha_blocked and not is_number(sender):
            raise RefusedMessage(f"alphanumeric senders are not allowed for {region} "
                                 "recipients; use a number or short code",
                                 code="sender_not_allowed")
        return region
