"""One way to say what a pydantic model refused, field by field, in an error message."""

from __future__ import annotations

from pydantic import ValidationError


def field_problems(
    exc: ValidationError, template: str = "{field}: {msg}", top: str = "(top level)"
) -> str:
    """Each error of ``exc`` as ``template`` with the dotted field path and pydantic's message,
    joined by "; " (``top`` names an error of the whole document)."""
    return "; ".join(
        template.format(field=".".join(str(p) for p in error["loc"]) or top, msg=error["msg"])
        for error in exc.errors()
    )
