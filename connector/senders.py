"""Sender pools: named sets of numbers, and the sticky, area-matched pick of one per recipient."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

import phonenumbers

from connector import msisdn
from connector.errors import BadRequest, ConnectorError

_PERSON: Final = b"connector-pool"  # blake2b personalization: scores belong to this use only
_NANP: Final = 1
K = TypeVar("K")


@dataclass(frozen=True)
class PoolNumber:
    e164: str
    country_code: int
    area: str | None  # NANP area code (the first three national digits); None elsewhere
    seed: hashlib.blake2b  # this number's hash state, copied once per candidate per pick


class Pool:
    """One pool's numbers, indexed by NANP area code and by country calling code."""

    def __init__(self, numbers: tuple[str, ...]) -> None:
        self.numbers = tuple(_number(e164) for e164 in numbers)
        self.by_area = _group(self.numbers, lambda n: n.area)
        self.by_country = _group(self.numbers, lambda n: n.country_code)

    def candidates(self, country_code: int, national: str) -> tuple[PoolNumber, ...]:
        """The closest tier that has any: same NANP area code, same calling code, all."""
        if country_code == _NANP and national[:3] in self.by_area:
            return self.by_area[national[:3]]
        return self.by_country.get(country_code, self.numbers)


class Pools:
    """The deployment's pools, and which number of one a recipient gets.

    The pick needs no store: within the candidates, the number with the highest
    blake2b(number, pool, recipient) wins (rendezvous hashing), so every process and replica
    gives a recipient the same number, adding a number moves only about 1/n of the recipients
    (to it), and removing one moves only the recipients it had.
    """

    def __init__(self, pools: Mapping[str, tuple[str, ...]]) -> None:
        self.pools = {name: Pool(numbers) for name, numbers in pools.items()}

    def pick(self, sender: str, recipient: phonenumbers.PhoneNumber, vendor: str,
             config: Mapping[str, str]) -> str | None:
        """The pool's number for this recipient when `sender` names a pool, else None."""
        pool = self.pools.get(sender)
        if pool is None:
            return None
        if chooses_own_sender(vendor, config):
            raise BadRequest(f"sender {sender!r} names one of the connector's sender pools, but "
                             f"{vendor} sends from a number of its own choosing here; send a "
                             "name or a number instead", code="invalid_sender")
        country_code = recipient.country_code or 0
        national = phonenumbers.national_significant_number(recipient)
        key = f"{sender}\x00+{country_code}{national}".encode()
        return max(pool.candidates(country_code, national),
                   key=lambda n: _score(n, key)).e164


def chooses_own_sender(vendor: str, config: Mapping[str, str]) -> bool:
    """True where the vendor ignores the request's sender: Bird sends from the channel's number
    (vendors/bird.py) and Twilio from a Messaging Service's own pool when one is named."""
    return vendor == "bird" or (vendor == "twilio" and bool(config.get("messaging-service-sid")))


def _group(numbers: tuple[PoolNumber, ...], key: Callable[[PoolNumber], K | None]
           ) -> dict[K, tuple[PoolNumber, ...]]:
    groups: dict[K, list[PoolNumber]] = {}
    for number in numbers:
        value = key(number)
        if value is not None:
            groups.setdefault(value, []).append(number)
    return {value: tuple(group) for value, group in groups.items()}


def _score(number: PoolNumber, key: bytes) -> tuple[bytes, str]:
    hasher = number.seed.copy()
    hasher.update(key)
    return hasher.digest(), number.e164  # the number breaks a (2^-64) tie the same everywhere


def _number(e164: str) -> PoolNumber:
    parsed = phonenumbers.parse(e164)
    country_code = parsed.country_code or 0
    national = phonenumbers.national_significant_number(parsed)
    return PoolNumber(
        e164=e164, country_code=country_code,
        area=national[:3] if country_code == _NANP else None,
        seed=hashlib.blake2b(f"{e164}\x00".encode(), digest_size=8, person=_PERSON),
    )


def parse_pools(raw: str) -> dict[str, tuple[str, ...]]:
    """`name=number,number;name=number`: pools of E.164 numbers; raise ValueError saying why.

    A name must be a valid alphanumeric sender (1-11 letters, digits or spaces, at least one
    letter), so the platform can send it and it can never be read as a number.
    """
    pools: dict[str, tuple[str, ...]] = {}
    for part in (p.strip() for p in raw.split(";") if p.strip()):
        name, sep, listed = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{part!r} is not name=number,number")
        if not _is_name(name):
            raise ValueError(f"pool name {name!r} must be 1-11 letters, digits or spaces "
                             "with at least one letter")
        if name in pools:
            raise ValueError(f"pool {name!r} is defined twice")
        numbers = tuple(_e164(name, n.strip()) for n in listed.split(",") if n.strip())
        if not numbers:
            raise ValueError(f"pool {name!r} has no numbers")
        repeated = sorted({n for n in numbers if numbers.count(n) > 1})
        if repeated:
            raise ValueError(f"pool {name!r} lists {', '.join(repeated)} more than once")
        pools[name] = numbers
    return pools


def _is_name(name: str) -> bool:
    try:
        return not msisdn.is_number(msisdn.parse_sender(name))
    except ConnectorError:
        return False


def _e164(pool: str, raw: str) -> str:
    compact = raw.replace(" ", "").replace("-", "")
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not compact.startswith("+") or not phonenumbers.is_valid_number(number):
        raise ValueError(f"pool {pool!r}: {raw!r} is not a valid international number "
                         "(+ or 00 and the country code)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
