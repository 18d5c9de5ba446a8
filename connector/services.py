"""The long-lived parts one running connector shares, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from connector.http import HttpClient
from connector.inbound.accounts import Accounts
from connector.inbound.keywords import Keywords
from connector.metrics import OutboxSnapshot
from connector.netcheck import AddressGuard
from connector.outbox import Dispatcher
from connector.recent import RecentSends
from connector.rules import Rules
from connector.senders import Pools
from connector.sending import Sender
from connector.settings import Settings
from connector.store import open_store
from connector.store.base import ReportBuilder, Store
from connector.throttle import Throttle, open_throttle
from connector.tokens import CallbackTokens, SecretBox


@dataclass
class Services:
    settings: Settings
    store: Store
    http: HttpClient
    guard: AddressGuard
    tokens: CallbackTokens
    box: SecretBox
    sender: Sender
    report: ReportBuilder
    dispatcher: Dispatcher
    outbox_gauges: OutboxSnapshot
    rules: Rules
    pools: Pools
    throttle: Throttle
    accounts: Accounts
    keywords: Keywords
    recent: RecentSends  # the sender's: what callbacks verify with, by message id

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Services:
        settings = settings.with_generated_secrets()
        store = store or open_store(settings)
        guard = AddressGuard(allow_private=settings.allow_private_networks,
                             allow_http=settings.allow_http)
        http = HttpClient(pin=guard.addresses)  # connects only where guard checked
        tokens = CallbackTokens(settings.secret_key)
        sender = Sender(store, http, settings, tokens)
        # Shared buckets when there is somewhere to share them; see connector/throttle.
        sender.throttle = throttle = open_throttle(settings, store)
        return cls(
            settings=settings, store=store, http=http, guard=guard, tokens=tokens,
            box=SecretBox(settings.secret_key), sender=sender,
            report=sender.report,
            dispatcher=Dispatcher(store, http, settings, guard),
            outbox_gauges=OutboxSnapshot(),
            rules=Rules(settings), throttle=throttle,
            pools=Pools(settings.sender_pools),
            accounts=Accounts(store), keywords=Keywords(settings), recent=sender.recent,
        )

    async def start(self) -> None:
        await self.store.open()
        await self.http.start()
        await self.throttle.start()

    async def close(self) -> None:
        await self.throttle.close()
        await self.http.close()
        await self.store.close()
