"""connector_store_up: 0 when a scrape's read of the store fails, 1 when it answers."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from connector.app import create_app
from connector.services import Services
from connector.settings import Settings


def store_up(text: str) -> float:
    (family,) = [f for f in text_string_to_metric_families(text)
                 if f.name == "connector_store_up"]
    (sample,) = family.samples
    return float(sample.value)


async def test_store_up_follows_the_scrape_time_read(tmp_path: Path) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)})
    services = Services.build(settings)
    transport = httpx.ASGITransport(app=create_app(settings, services))
    async with httpx.AsyncClient(transport=transport, base_url="http://connector") as client:
        assert store_up((await client.get("/metrics")).text) == 0  # the store is not open
        await services.store.open()
        try:
            assert store_up((await client.get("/metrics")).text) == 1
        finally:
            await services.store.close()
        assert store_up((await client.get("/metrics")).text) == 0
