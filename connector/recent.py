"""Recently sent messages' vendor and sealed settings, so their callbacks verify unread."""

from __future__ import annotations

from typing import Final

from connector.store.base import SentVia

SIZE: Final = 8192  # about the messages of the last few seconds at full rate


class RecentSends:
    """Message id -> SentVia, filled by the send once it holds the claim and by the callback
    path's reads; the oldest entry goes first. Per process: a callback landing on another
    process reads what it needs from the store. Holds settings sealed only, and its repr
    shows none of them."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._entries: dict[str, SentVia] = {}

    def __repr__(self) -> str:
        return f"RecentSends({len(self._entries)}/{self.size})"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, message_id: str) -> SentVia | None:
        return self._entries.get(message_id)

    def remember(self, message_id: str, via: SentVia) -> None:
        entries = self._entries
        entries[message_id] = via
        if len(entries) > self.size:
            del entries[next(iter(entries))]

    def forget(self, message_id: str) -> None:
        self._entries.pop(message_id, None)
