"""The deploy-side runtime: policy bundles on onnxruntime + numpy, no torch on this path.

``load_policy(bundle)`` verifies and loads a bundle; ``policy.predict(obs_history, rng)`` returns
an :class:`ActionChunk`. :mod:`policy_runtime.inference.torch_backend` puts a training checkpoint
behind the same interface (imports torch).
"""

from __future__ import annotations

from policy_runtime.chunk import ActionChunk
from policy_runtime.inference.manifest import BundleError, Manifest
from policy_runtime.inference.providers import RuntimeOptions, choose_providers
from policy_runtime.inference.runtime import (
    ObservationError,
    OnnxPolicy,
    PolicyRuntime,
    load_policy,
)

__all__ = [
    "ActionChunk",
    "BundleError",
    "Manifest",
    "ObservationError",
    "OnnxPolicy",
    "PolicyRuntime",
    "RuntimeOptions",
    "choose_providers",
    "load_policy",
]
