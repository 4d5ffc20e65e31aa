"""`atcr scanner` settings (SCANNER_*; ATCR's scanner names where it has one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_positive, check_url, default_data_dir, setting


@dataclass(frozen=True)
class ScannerSettings(NetworkSettings):
    http_addr: str = setting("127.0.0.1:8090", "SCANNER_HTTP_ADDR", "address of the scanner's /readyz and /status")
    holds: tuple[str, ...] = setting(
        (), "SCANNER_HOLDS", "comma-separated hold URLs whose io.atcr.hold.subscribeScanJobs this scanner serves"
    )
    secret: str = setting(
        "", "SCANNER_SECRET", "the shared secret the holds expect (their HOLD_SCANNER_SECRET)", secret=True
    )
    vuln_db: str = setting(
        "",
        "SCANNER_VULN_DB",
        "vulnerability data in the OSV format: a directory of OSV JSON files, a zip (osv.dev all.zip layout) "
        "or an http(s) URL of one",
    )
    db_refresh_interval: int = setting(
        6 * 3600, "SCANNER_DB_REFRESH_INTERVAL", "seconds between reloads of SCANNER_VULN_DB (0: never)"
    )
    db_timeout: float = setting(600.0, "SCANNER_DB_TIMEOUT", "seconds a download of SCANNER_VULN_DB may take")
    work_dir: Path = setting(
        default_data_dir() / "scanner", "SCANNER_WORK_DIR", "where layers are staged while a job runs (deleted after)"
    )
    concurrency: int = setting(1, "SCANNER_CONCURRENCY", "jobs this scanner runs at once, per hold")
    layer_timeout: float = setting(600.0, "SCANNER_LAYER_TIMEOUT", "seconds one layer download may take")
    max_image_size: int = setting(
        20 * 1024**3, "SCANNER_MAX_IMAGE_SIZE", "largest image (sum of its layers) scanned, in bytes"
    )

    def validate(self) -> None:
        super().validate()
        check_addr("SCANNER_HTTP_ADDR", self.http_addr)
        for url in self.holds:
            check_url("SCANNER_HOLDS", url)
        if self.holds and not self.secret:
            raise ConfigError("SCANNER_SECRET: required to subscribe to holds")
        if self.holds and not self.vuln_db:
            raise ConfigError("SCANNER_VULN_DB: required to scan (a directory, zip or URL of OSV records)")
        if self.db_refresh_interval < 0:
            raise ConfigError("SCANNER_DB_REFRESH_INTERVAL: must be 0 (never) or positive")
        check_positive("SCANNER_DB_TIMEOUT", self.db_timeout)
        if not 1 <= self.concurrency <= 8:
            raise ConfigError("SCANNER_CONCURRENCY: 1 to 8")
        check_positive("SCANNER_LAYER_TIMEOUT", self.layer_timeout)
        check_positive("SCANNER_MAX_IMAGE_SIZE", self.max_image_size)
