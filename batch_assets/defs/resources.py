"""Dagster resources: the Batch API client and the warehouse. Thin wrappers over batching/ and warehouse/."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from batch_assets import warehouse
from batch_assets.batching.client import BatchClient, openai_client_from_env
from batch_assets.ledger.store import Ledger
from batch_assets.provider import check_provider


class BatchAPIResource(dg.ConfigurableResource):
    """Where batches go. provider 'local' (default) or 'openai' (any OpenAI-compatible endpoint)."""

    provider: str = "local"
    api_key: str | None = None  # set from EnvVar("OPENAI_API_KEY"), never a literal
    base_url: str | None = None
    local_state_dir: str = ".batch_assets/local_api"
    max_retries: int = 3
    _client: BatchClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self._new_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> BatchClient:
        """The run's (or sensor tick's) one client: made when the run starts, closed when it ends."""
        if self._client is None:  # used outside a run (a test or a script): made on first use
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> BatchClient:
        check_provider(self.provider)
        if self.provider == "openai":
            env = {"OPENAI_API_KEY": self.api_key or "", "OPENAI_BASE_URL": self.base_url or ""}
            return BatchClient(openai_client_from_env(env, max_retries=self.max_retries))
        from batch_assets.local.config import EngineConfig
        from batch_assets.local.transport import local_openai_client

        config = dataclasses.replace(EngineConfig.from_env(), state_dir=Path(self.local_state_dir))
        return BatchClient(local_openai_client(config, max_retries=self.max_retries))


class OutputTable(dg.Config):
    """An output table the warehouse does not ship (a declared pipeline's): columns name → DuckDB type."""

    name: str
    columns: dict[str, str]
    key: list[str]


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file, the output tables the code location declares on top of the shipped ones, and
    the folders for request files, downloads and result payloads."""

    duckdb_path: str
    data_dir: str
    output_tables: list[OutputTable] = []

    def table_declarations(self) -> list[warehouse.TableDeclaration]:
        return [warehouse.TableDeclaration(table.name, dict(table.columns), tuple(table.key))
                for table in self.output_tables]

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The warehouse, with every declared output table created if it is missing."""
        con = warehouse.connect(self.duckdb_path, tables=self.table_declarations())
        try:
            yield con
        finally:
            con.close()

    def requests_dir(self, pipeline: str, month: date) -> Path:
        """Content-addressed request files, kept as submitted."""
        return Path(self.data_dir) / "requests" / pipeline / f"{month:%Y-%m}"

    def downloads_dir(self, pipeline: str, month: date) -> Path:
        return Path(self.data_dir) / "downloads" / pipeline / f"{month:%Y-%m}"

    @property
    def results_dir(self) -> Path:
        """One Parquet file of answers per batch, named by batch id."""
        return Path(self.data_dir) / "results"


class LedgerResource(dg.ConfigurableResource):
    """The batch ledger (SQLite beside the warehouse, or PostgreSQL when runs spread over machines)."""

    url: str

    @contextmanager
    def open(self) -> Iterator[Ledger]:
        ledger = Ledger(self.url)
        try:
            yield ledger
        finally:
            ledger.close()


class SourcesResource(dg.ConfigurableResource):
    """Where documents and company metrics come from (defaults: the bundled demo data)."""

    documents_path: str | None = None
    docs_per_month: int | None = None
    company_metrics_path: str | None = None
