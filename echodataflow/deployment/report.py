"""What a run did: per-stage and per-service reports, and the run context."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class RunContext(BaseModel):
    """Facts about one service run that every stage needs; holds no secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    service: str
    scheduled: datetime
    force: bool = False
    started: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the run began: half-written stores older than this are "
        "left over from an interrupted run.",
    )


class ProductResult(BaseModel):
    """One product: written, skipped as up to date, or failed."""

    model_config = ConfigDict(extra="forbid")

    product: str
    sources: list[str]
    status: str = Field(description="written | skipped | failed")
    reason: str = ""
    seconds: float = 0.0


class StageReport(BaseModel):
    """The outcome of one stage."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    destination: str
    results: list[ProductResult] = Field(default_factory=list)
    left_out: dict[str, str] = Field(
        default_factory=dict, description="Source files not grouped, with reasons."
    )

    def count(self, status: str) -> int:
        """Count the products with ``status``."""
        return sum(1 for result in self.results if result.status == status)

    @property
    def failed(self) -> list[ProductResult]:
        """The products that failed."""
        return [result for result in self.results if result.status == "failed"]


class ServiceReport(BaseModel):
    """The outcome of one service run."""

    model_config = ConfigDict(extra="forbid")

    service: str
    run_id: str
    stages: list[StageReport] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every product of every stage succeeded."""
        return not any(stage.failed for stage in self.stages)

    def summary(self) -> str:
        """One line per stage, then one line per failed product."""
        lines = []
        for stage in self.stages:
            lines.append(
                f"{stage.stage}: {stage.count('written')} written, "
                f"{stage.count('skipped')} up to date, {len(stage.failed)} failed"
            )
            lines.extend(f"  FAILED {r.product}: {r.reason}" for r in stage.failed)
        return "\n".join(lines)
