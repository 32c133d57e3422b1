"""Export a training checkpoint to a policy bundle (ONNX graphs + manifest). Needs torch.

The package itself imports nothing (so walking the project's modules stays torch-free); the API
lives in :mod:`policy_runtime.export.bundle`: ``export_bundle(checkpoint, out, ExportOptions())``.
"""
