"""The repository as a part of the running hold: opened in the lifespan, closed at shutdown.

The app's routes are built before the event loop runs, but opening the repository is async
(its database lives in worker threads). `RepoService` bridges the two: routes ask it for the
repository per request, and until the lifespan has opened it they answer 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Router

from hold.repo.bootstrap import ensure_bootstrapped
from hold.repo.errors import RepoClosed
from hold.repo.repo import Repo
from hold.repo.routes import repo_routes
from hold.repo.signing import RepoSigner
from hold.settings import HoldSettings

log = logging.getLogger("atcr.hold.repo")

REPO_FILE = "repo.sqlite"


class RepoService:
    def __init__(self, settings: HoldSettings, did: str, signer: RepoSigner, path: Path | None = None) -> None:
        self.settings = settings
        self.did = did
        self.signer = signer
        self.path = path or settings.data_dir / REPO_FILE
        self._repo: Repo | None = None

    def get(self) -> Repo:
        """The open repository; RepoClosed (503) before the lifespan opened it or after it closed."""
        if self._repo is None:
            raise RepoClosed("the repository is not open")
        return self._repo

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Repo]:
        """Open the repository, write the first-start records if an owner is configured."""
        repo = await Repo.open(self.path, self.did, self.signer)
        try:
            if self.settings.owner:
                created = await ensure_bootstrapped(
                    repo, self.settings.owner, self.settings.public, self.settings.allow_all_crew,
                    bluesky_posts=self.settings.bluesky_posts,
                )
                if created is not None:
                    log.info("hold repo: created captain and owner crew records (rev %s)", created.commit.rev)
            else:
                log.warning("hold repo: HOLD_OWNER is not set, so no captain record was written")
            self._repo = repo
            yield repo
        finally:
            self._repo = None
            await repo.close()

    def routes(self, did_document: Callable[[], Mapping[str, Any]] | None = None) -> Router:
        return repo_routes(self.get, self.settings, did_document=did_document)
