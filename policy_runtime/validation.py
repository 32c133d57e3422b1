"""One way to say what a pydantic model or a YAML file refused, in an error message that names
the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError


def field_problems(
    exc: ValidationError, template: str = "{field}: {msg}", top: str = "(top level)"
) -> str:
    """Each error of ``exc`` as ``template`` with the dotted field path and pydantic's message,
    joined by "; " (``top`` names an error of the whole document)."""
    return "; ".join(
        template.format(field=".".join(str(p) for p in error["loc"]) or top, msg=error["msg"])
        for error in exc.errors()
    )


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML file ``path`` as a mapping; ValueError naming ``what`` and the file when it
    cannot be read, is not YAML, or is not a mapping at the top level."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: not YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path}: expected a mapping at the top level")
    return data


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_yaml_model(model: type[ModelT], path: Path | str, what: str) -> ModelT:
    """``model`` validated from the YAML file ``path``; ValueError naming ``what``, the file and
    the field for anything wrong."""
    path = Path(path)
    data = read_yaml_mapping(path, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{what} {path}: {field_problems(exc)}") from exc
