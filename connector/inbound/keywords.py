"""Keywords a recipient sends alone: STOP-class words opt them out, START-class back in."""

from __future__ import annotations

from typing import Final

from connector.settings import Settings

# CTIA's standard opt-out and opt-in words, as carriers and vendors honour them (SPEC 9).
OPT_OUT: Final = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
OPT_IN: Final = frozenset({"start", "unstop"})


class Keywords:
    def __init__(self, settings: Settings) -> None:
        self.opt_out = OPT_OUT | frozenset(settings.opt_out_keywords)
        self.opt_in = OPT_IN | frozenset(settings.opt_in_keywords)

    def listed(self, text: str) -> bool | None:
        """True: opt the sender out; False: back in; None: not a keyword. Only the whole
        message counts, whatever its case and surrounding whitespace."""
        word = text.strip().casefold()
        if word in self.opt_out:
            return True
        if word in self.opt_in:
            return False
        return None
