"""Settings from environment variables (prefix CIVICGRID_); see README for the list."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIVICGRID_", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file civicgrid.db inside data_dir
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    default_locale: str = "zh_Hans"
    session_hours: int = 12
    # Login throttling: this many failures for one username within the window lock it out.
    login_max_failures: int = 5
    login_window_minutes: int = 15
    # Run the background worker inside `civicgrid serve` (the embedded default).
    embedded_worker: bool = True
    # Database connections each process keeps (as many again may open in a burst). Every web
    # process and worker has its own pool: processes × 2 × this must stay under PostgreSQL's
    # max_connections. `civicgrid serve --workers N` divides the default among its processes.
    db_pool_size: int = Field(default=20, ge=1, le=200)
    secure_cookies: bool = False

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'civicgrid.db').resolve()}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    @property
    def secret_key(self) -> str:
        return signing_secret(self.ensure_data_dir())


def signing_secret(data_dir: Path) -> str:
    """The installation's signing secret: generated on first use, kept in the data dir (mode 600)."""
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
