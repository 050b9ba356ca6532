"""The system health settings: ``CORESTONE_SYSTEM_HEALTH`` and its thresholds.

Kept apart from :mod:`corestone.config` like the other mixins. Every threshold is a
ratio (0..1) or seconds; a ``warn`` threshold above its ``fail`` one (below, for free
disk) is refused at start-up, naming both variables.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

__all__ = ["SYSTEM_CHECKS", "SystemCheckName", "SystemSettings"]

SystemCheckName = Literal["memory", "cpu", "disk", "fds", "event-loop"]
SYSTEM_CHECKS: tuple[SystemCheckName, ...] = ("memory", "cpu", "disk", "fds", "event-loop")

_Ratio = Annotated[float, Field(ge=0, le=1)]


class SystemSettings(BaseModel):
    """The host and process checks of :class:`~corestone.Settings` (``CORESTONE_`` prefixed).

    A mixin, like the email settings; read them on ``Settings``.
    """

    system_health: bool = Field(
        True,
        description="sample memory, CPU, disk, file descriptors and event-loop lag: gauges on"
        " /metrics and checks in /health/ready",
        examples=["false"],
    )
    system_checks: Annotated[list[SystemCheckName], NoDecode] = Field(
        default_factory=lambda: list(SYSTEM_CHECKS),
        description="which system checks readiness runs, comma-separated (the gauges are"
        " always exposed); empty: none",
        examples=["memory,disk,fds"],
    )
    system_sample_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description="how long one psutil sample serves every scrape and health check",
        examples=[2],
    )
    system_disk_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more directories whose disk to watch, comma-separated (the SQLite"
        " file's directory is always watched)",
        examples=["/var/log/corestone,/srv/uploads"],
    )
    system_memory_warn_ratio: _Ratio = Field(0.90, examples=[0.9])
    system_memory_fail_ratio: _Ratio = Field(0.98, examples=[0.98])
    system_cpu_warn_ratio: _Ratio = Field(0.90, examples=[0.9])
    system_cpu_fail_ratio: _Ratio = Field(1.0, examples=[1.0])
    system_disk_warn_free_ratio: _Ratio = Field(0.10, examples=[0.1])
    system_disk_fail_free_ratio: _Ratio = Field(0.02, examples=[0.02])
    system_fds_warn_ratio: _Ratio = Field(0.80, examples=[0.8])
    system_fds_fail_ratio: _Ratio = Field(0.95, examples=[0.95])
    loop_lag_interval_seconds: float = Field(
        0.5, gt=0, le=60, description="how often the loop-lag probe is scheduled", examples=[0.5]
    )
    loop_lag_window_seconds: float = Field(
        30.0, gt=0, le=3600, description="the lag reported is the max over this window"
    )
    loop_lag_warn_seconds: float = Field(0.1, gt=0, le=3600, examples=[0.1])
    loop_lag_fail_seconds: float = Field(1.0, gt=0, le=3600, examples=[1])

    @field_validator("system_disk_paths", "system_checks", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> Self:
        pairs = (
            ("memory", self.system_memory_warn_ratio, self.system_memory_fail_ratio),
            ("cpu", self.system_cpu_warn_ratio, self.system_cpu_fail_ratio),
            ("fds", self.system_fds_warn_ratio, self.system_fds_fail_ratio),
        )
        for name, warn, fail in pairs:
            if warn > fail:
                raise ValueError(
                    f"CORESTONE_SYSTEM_{name.upper()}_WARN_RATIO ({warn}) must not exceed "
                    f"CORESTONE_SYSTEM_{name.upper()}_FAIL_RATIO ({fail})"
                )
        if self.system_disk_warn_free_ratio < self.system_disk_fail_free_ratio:
            raise ValueError(
                "CORESTONE_SYSTEM_DISK_WARN_FREE_RATIO must be at least "
                "CORESTONE_SYSTEM_DISK_FAIL_FREE_RATIO (warn before the disk is full)"
            )
        if self.loop_lag_warn_seconds > self.loop_lag_fail_seconds:
            raise ValueError(
                "CORESTONE_LOOP_LAG_WARN_SECONDS must not exceed CORESTONE_LOOP_LAG_FAIL_SECONDS"
            )
        return self
