"""Export a training checkpoint to a policy bundle (ONNX graphs + manifest). Needs torch."""

from __future__ import annotations

from policy_runtime.export.bundle import ExportError, ExportOptions, export_bundle

__all__ = ["ExportError", "ExportOptions", "export_bundle"]
