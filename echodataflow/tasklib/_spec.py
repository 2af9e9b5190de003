"""The contract between a step module and the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import xarray as xr


@dataclass
class ChainState:
    """What one file (or group) carries from step to step inside one worker call."""

    sources: list[str]
    storage_options: dict[str, Any]
    echodata: Any = None
    dataset: xr.Dataset | None = None
    product: str | None = None
    echodata_list: list[Any] = field(default_factory=list)
    dataset_list: list[xr.Dataset] = field(default_factory=list)


StepFunction = Callable[[ChainState, dict[str, Any]], ChainState]


@dataclass(frozen=True)
class StepSpec:
    """A registered step.

    ``target`` is the library function whose signature validates ``task_params``
    (or its dotted path, whose parameter names are cached per library version, so
    that validating needs no import of the library);
    ``provided`` names the arguments the pipeline fills in itself; ``choices`` lists
    the accepted values of enumerated parameters.
    """

    name: str
    func: StepFunction
    target: Callable[..., Any] | str | None
    provided: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()
    choices: dict[str, frozenset[Any]] = field(default_factory=dict)
    scope: Literal["file", "group"] = "file"
    product: str | None = None
    needs: Literal["raw", "echodata", "dataset", "any"] = "any"
    accepts_var_keywords: bool = True
    extra: frozenset[str] = frozenset()
    check: Callable[[dict[str, Any]], list[str]] | None = None
