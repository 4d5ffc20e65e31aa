"""An AppView for webhook tests: its own Valkey (its queue is not shared with other AppViews,
whose workers would try this test's receiver), the session's hold and PDS, a real receiver on
loopback let through the SSRF guard by ATCR_WEBHOOK_ALLOWED_HOSTS, and fast retries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fixtures_stack import RegistryStack
from tests.support.stack import Service, appview_env, free_port, network_env, start_service
from tests.support.ui_stack import _own_valkey
from tests.support.webhook_receiver import Receiver, running_receiver

LOGO = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><circle cx='16' cy='16' r='14' fill='#7a1fa2'/></svg>"


@dataclass
class WebhooksStack:
    appview: Service
    valkey_url: str
    registry: RegistryStack
    receiver: Receiver
    workdir: Path
    restarts: int = 0

    @property
    def url(self) -> str:
        return self.appview.url

    @property
    def host(self) -> str:
        return self.appview.url.removeprefix("http://")

    def restart(self, *, kill: bool) -> None:
        """SIGKILL (no shutdown at all) or SIGTERM the AppView, then start it again, same settings."""
        if kill:
            self.appview.proc.kill()
            self.appview.proc.wait(timeout=30)
        else:
            self.appview.stop()
        # Same settings and keys (ATCR_DATA_DIR), but another working directory: the first one now holds
        # the data dir `appview/`, which `python -m` would import as the `appview` package.
        self.restarts += 1
        cwd = self.workdir / f"restart-{self.restarts}"
        self.appview = start_service("webhooks-appview", "appview", self.appview.env, cwd, self.appview.url)


@pytest.fixture(scope="session")
def webhooks_stack(tmp_path_factory: pytest.TempPathFactory, registry_stack: RegistryStack) -> Iterator[WebhooksStack]:
    work: Path = tmp_path_factory.mktemp("webhooks")
    net = registry_stack.network
    brand = work / "brand"
    (brand / "static").mkdir(parents=True)
    (brand / "static" / "logo.svg").write_text(LOGO)
    with running_receiver() as receiver, _own_valkey() as url:
        port = free_port()
        env = {
            **network_env(url, net.plc_url, net.pds_url),
            **appview_env(work, port, registry_stack.hold_did),
            "ATCR_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
            "ATCR_WEBHOOK_RETRY_BASE": "0.2",
            "ATCR_WEBHOOK_LEASE": "3",
            "ATCR_WEBHOOK_TIMEOUT": "2",
            # Branding too (appview/web/branding.py): these pages double as its end-to-end check.
            "ATCR_UI_NAME": "Harbor",
            "ATCR_UI_ACCENT_COLOR": "#7a1fa2",
            "ATCR_UI_LOGO_URL": "/static/logo.svg",
            "ATCR_UI_FOOTER_LINKS": "Terms=https://example.com/terms,Status=/status",
            "ATCR_UI_TEMPLATE_DIR": str(brand),
        }
        stack = WebhooksStack(start_service("webhooks-appview", "appview", env, work, f"http://127.0.0.1:{port}"),
                              url, registry_stack, receiver, work)
        try:
            yield stack
        finally:
            stack.appview.stop()


__all__ = ["WebhooksStack", "webhooks_stack"]
