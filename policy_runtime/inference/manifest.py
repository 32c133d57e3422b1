"""The policy bundle's ``manifest.json``: everything the runtime needs, validated before use.

A bundle is a directory (or a ``.zip`` of one) holding ``manifest.json`` and ONNX graphs. The
manifest names every file with its sha256, so a file changed after export, a file missing, or a
manifest from another format version is refused before a graph is loaded; no pickle is ever read.

Graphs work in the normalised space of the policy: they take raw observations (``float32``
low-dim, ``uint8`` images; normalisation and the centre crop are part of the observation encoder)
and produce or denoise *normalised* action chunks; the runtime turns those into actions with the
action map stored here (``x = (x_norm - offset) / scale``).

Graph roles:

* ``obs_encoder``: observations ``obs.<key>`` ``(B, To, *shape)`` -> ``cond`` ``(B, C)``.
* ``denoiser``: ``sample`` ``(B, H, Da)``, ``timestep`` ``(B,)`` int64, ``cond`` -> ``model_output``
  (one step of the diffusion network; the runtime runs the sampler loop in numpy).
* ``fused``: observations and ``noise`` ``(B, H, Da)`` -> ``action`` ``(B, H, Da)`` normalised: the
  whole ``fused_steps``-step DDIM loop in one graph.
* ``generator``: observations and ``noise`` -> ``action``: a drifting policy's one step.
* ``transformer``: observations -> ``logits`` ``(B, H, k)`` and ``bin_actions`` ``(B, H, k, Da)``
  normalised: a BeT policy's bin scores and each bin's action (k-means centre + predicted
  offset) per step of the horizon; the runtime samples the bins in numpy (``categorical``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from policy_runtime.validation import field_problems

FORMAT: Literal["policy_runtime.bundle"] = "policy_runtime.bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

GraphRole = Literal["obs_encoder", "denoiser", "fused", "generator", "transformer"]
TensorDtype = Literal["float32", "float16", "uint8", "int64"]


class BundleError(ValueError):
    """A bundle the runtime will not load; the message names the file or manifest field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AffineSpec(_Strict):
    """``x_normalised = x * scale + offset`` per element of a key's per-step shape."""

    scale: list[float]
    offset: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> AffineSpec:
        if len(self.scale) != len(self.offset):
            raise ValueError(
                f"scale has {len(self.scale)} values but offset has {len(self.offset)}"
            )
        if any(s == 0 or not np.isfinite(s) for s in self.scale):
            raise ValueError("every scale must be finite and non-zero")
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.scale, np.float32), np.asarray(self.offset, np.float32)


class ObsKeySpec(_Strict):
    key: str
    #: Per-step shape (without batch and time axes).
    shape: tuple[int, ...]
    dtype: Literal["float32", "uint8"]
    kind: Literal["low_dim", "image"]
    normalization: AffineSpec


class ObsSpec(_Strict):
    n_obs_steps: int = Field(gt=0)
    keys: list[ObsKeySpec] = Field(min_length=1)
    #: Centre crop (H, W) the encoder applies to every image, if any.
    image_crop: tuple[int, int] | None = None


class ActionSpec(_Strict):
    key: str
    dim: int = Field(gt=0)
    #: Predicted horizon H; the runtime returns its steps from ``start`` on.
    horizon: int = Field(gt=0)
    n_action_steps: int = Field(gt=0)
    #: Returned action ``i`` is due ``(i + offset_steps) / control_hz`` after the newest
    #: observation (the training data's ``action_offset_steps``; absent in older bundles: 0).
    offset_steps: int = Field(default=0, ge=0)
    #: Index in the predicted horizon of the returned chunk's first action (the policy
    #: config's ``action_start``). Absent (every bundle before it, and every policy trained
    #: here): ``n_obs_steps - 1``, the newest observation's step. Written only when set, so a
    #: bundle without it still reads in runtimes older than the field, and one with it is
    #: refused by them (an unknown field) rather than cut at the wrong step: no version change.
    start: int | None = Field(default=None, ge=0)
    #: ``ee``: position (3, m) + 6D rotation + gripper opening in base_link; ``joint``: six joint
    #: positions (rad) + gripper; ``other``: anything else (a foreign dataset's actions).
    representation: Literal["ee", "joint", "other"]
    normalization: AffineSpec
    #: Per-dimension range of the training actions (what the normaliser maps to [-1, 1]).
    low: list[float]
    high: list[float]

    @model_serializer(mode="wrap")
    def _omit_default_start(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.start is None:
            data.pop("start", None)
        return data

    def chunk_start(self, n_obs_steps: int) -> int:
        """Index of the returned chunk's first action in the predicted horizon."""
        return n_obs_steps - 1 if self.start is None else self.start


class SamplerSpec(_Strict):
    """How to turn noise into a chunk. ``one_step``: a drifting generator (no schedule);
    ``categorical``: a BeT policy's bins drawn from ``softmax(logits / temperature)`` by uniform
    noise ``(B, H)``."""

    kind: Literal["ddpm", "ddim", "one_step", "categorical"]
    num_inference_steps: int = Field(gt=0)
    num_train_timesteps: int = Field(default=100, gt=0)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    #: ``categorical`` only (written only there, so other bundles read in older runtimes).
    temperature: float = Field(default=1.0, gt=0)

    @model_serializer(mode="wrap")
    def _omit_temperature(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.kind != "categorical":
            data.pop("temperature", None)
        return data


class TensorSpec(_Strict):
    name: str
    #: ``-1`` marks the batch axis (dynamic).
    shape: tuple[int, ...]
    dtype: TensorDtype


class QuantizedGraph(_Strict):
    """A graph's int8 twin (``prt quantize``): the same inputs and outputs, weights and
    activations quantised (QuantizeLinear/DequantizeLinear pairs), the activation ranges
    calibrated on what the float graph saw while the policy ran on ``calibration``'s
    observations and noise. Its file is hashed in ``files`` like every other."""

    file: str
    #: The tool and its settings (e.g. ``nncf 3.4.0 post-training, preset performance``).
    method: str
    #: Where the calibration observations came from (a dataset path, or random).
    calibration: str
    #: Graph calls the ranges were collected on.
    samples: int = Field(gt=0)
    #: Graph calls on held-out observations the result was judged on, and its error there:
    #: the mean over those calls of mean |int8 - float| output over mean |float| output (the
    #: worst output).
    held_out_samples: int = Field(gt=0)
    held_out_error: float = Field(ge=0)
    #: Layers (Conv/MatMul/Gemm) computing in int8, of ``layers``: accuracy control returns
    #: the ones that move the output most to float.
    int8_layers: int = Field(ge=0)
    layers: int = Field(ge=0)


class GraphSpec(_Strict):
    file: str
    role: GraphRole
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: DDIM steps a ``fused`` graph runs.
    fused_steps: int | None = None
    precision: Literal["fp32", "fp16"] = "fp32"
    #: The int8 twin the runtime runs at precision ``int8``; written only when there is one,
    #: so bundles without read in older runtimes.
    int8: QuantizedGraph | None = None

    @model_serializer(mode="wrap")
    def _omit_no_int8(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.int8 is None:
            data.pop("int8", None)
        return data


class ParitySpec(_Strict):
    """Torch vs onnxruntime at export, on random observations with the same noise."""

    max_abs_error: float
    #: The bound export enforced; None for a figure recorded but not checked.
    tolerance: float | None
    #: What was compared (normalised action chunks).
    compared: str
    batch: int


class PrecisionCheck(_Strict):
    """A low precision judged in closed loop (``prt calibrate-precision``): the policy's task in
    simulation over the same seeds at fp32 and at ``precision`` on ``backend``; accepted when
    the success rate fell by at most ``tolerance_points``."""

    backend: Literal["onnxruntime", "openvino"]
    precision: Literal["bf16", "fp16", "int8"]
    accepted: bool
    task: str
    episodes: int
    start_seed: int
    success_rate: float
    fp32_success_rate: float
    tolerance_points: float
    #: max and mean |action - fp32 action| (normalised) on the same observations and noise.
    open_loop_max_abs_error: float
    open_loop_mean_abs_error: float
    #: The processor it ran on.
    device: str


class Manifest(_Strict):
    format: Literal["policy_runtime.bundle"] = FORMAT
    version: int
    kind: Literal["diffusion", "drifting", "bet"]
    control_hz: float = Field(gt=0)
    obs: ObsSpec
    action: ActionSpec
    sampler: SamplerSpec
    graphs: list[GraphSpec] = Field(min_length=1)
    parity: list[ParitySpec] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)
    #: Written only when there is one, so bundles without read in older runtimes.
    precision_checks: list[PrecisionCheck] = Field(default_factory=list)
    #: sha256 (hex) of every file of the bundle except the manifest itself.
    files: dict[str, str]

    @model_serializer(mode="wrap")
    def _omit_no_checks(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.precision_checks:
            data.pop("precision_checks", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        roles = [g.role for g in self.graphs]
        if self.kind == "diffusion" and not (
            {"obs_encoder", "denoiser"} <= set(roles) or "fused" in roles
        ):
            raise ValueError("graphs: a diffusion bundle needs obs_encoder + denoiser or fused")
        if self.kind == "drifting" and "generator" not in roles:
            raise ValueError("graphs: a drifting bundle needs a generator graph")
        if self.kind == "bet" and "transformer" not in roles:
            raise ValueError("graphs: a bet bundle needs a transformer graph")
        if (self.kind == "bet") != (self.sampler.kind == "categorical"):
            raise ValueError(
                f"sampler.kind: {self.sampler.kind!r} does not sample a {self.kind} policy"
            )
        for graph in self.graphs:
            for file in (graph.file, *([graph.int8.file] if graph.int8 else [])):
                if file not in self.files:
                    raise ValueError(f"files: graph file {file!r} has no sha256 entry")
            if graph.role == "fused" and not graph.fused_steps:
                raise ValueError(f"graphs: fused graph {graph.file!r} needs fused_steps")
        n = self.action.n_action_steps + self.action.chunk_start(self.obs.n_obs_steps)
        if n > self.action.horizon:
            start = "n_obs_steps - 1" if self.action.start is None else "action.start"
            raise ValueError(
                f"action.n_action_steps: {start} + n_action_steps ({n}) exceeds "
                f"horizon {self.action.horizon}"
            )
        for field, values in (
            ("action.low", self.action.low),
            ("action.high", self.action.high),
            ("action.normalization.scale", self.action.normalization.scale),
        ):
            if len(values) != self.action.dim:
                raise ValueError(
                    f"{field} has {len(values)} values, action.dim is {self.action.dim}"
                )
        return self

    @property
    def quantized(self) -> bool:
        """Whether ``prt quantize`` gave the bundle int8 graphs."""
        return any(g.int8 is not None for g in self.graphs)

    def graph(self, role: GraphRole, fused_steps: int | None = None) -> GraphSpec | None:
        for graph in self.graphs:
            if graph.role == role and (fused_steps is None or graph.fused_steps == fused_steps):
                return graph
        return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BundleFiles:
    """Read access to a bundle's files, from a directory or a ``.zip`` of one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self._zip: zipfile.ZipFile | None = None
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
        else:
            raise BundleError(f"{self.path}: not a bundle (neither a directory nor a .zip)")

    def names(self) -> set[str]:
        if self._zip is not None:
            return {n for n in self._zip.namelist() if not n.endswith("/")}
        return {str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()}

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            raise BundleError(f"{self.path}: file {name!r} is missing") from None


def read_manifest(files: BundleFiles) -> Manifest:
    """Parse and validate ``manifest.json`` (format, version, then every field)."""
    raw = files.read(MANIFEST_FILE)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{files.path}/{MANIFEST_FILE}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{files.path}/{MANIFEST_FILE}: not a JSON object")
    if data.get("format") != FORMAT:
        raise BundleError(
            f"{files.path}/{MANIFEST_FILE}: field 'format' is {data.get('format')!r}, "
            f"not {FORMAT!r}"
        )
    if data.get("version") != FORMAT_VERSION:
        raise BundleError(
            f"{files.path}/{MANIFEST_FILE}: field 'version' is {data.get('version')!r}; this "
            f"runtime reads bundle version {FORMAT_VERSION} (re-export the checkpoint)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = field_problems(exc, "field '{field}': {msg}", "(manifest)")
        raise BundleError(f"{files.path}/{MANIFEST_FILE}: {problems}") from None


def verified_file(files: BundleFiles, manifest: Manifest, name: str) -> bytes:
    """A bundle file's bytes after checking them against the manifest's sha256."""
    expected = manifest.files.get(name)
    if expected is None:
        raise BundleError(f"{files.path}: field 'files' has no sha256 for {name!r}")
    data = files.read(name)
    actual = sha256_bytes(data)
    if actual != expected:
        raise BundleError(
            f"{files.path}/{name}: sha256 {actual[:16]}... does not match field "
            f"'files.{name}' ({expected[:16]}...): the file changed after export"
        )
    return data


def write_bundle(directory: Path, manifest: Manifest, graphs: dict[str, bytes]) -> None:
    """Write graphs and manifest atomically: built beside ``directory``, then renamed in."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in graphs.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    if directory.exists():
        if not (directory / MANIFEST_FILE).is_file():
            shutil.rmtree(staging)
            raise BundleError(f"{directory}: exists and is not a bundle; refusing to replace it")
        shutil.rmtree(directory)
    staging.rename(directory)


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    """``data`` at ``path`` atomically (a synced temporary file renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp's 0600 would hide the bundle from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def require_directory(bundle: Path) -> None:
    """Refuse a zipped bundle where it is to be changed in place (before any work is done)."""
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle}: a zipped bundle cannot be changed; unzip it first")


def rewrite_manifest(
    directory: Path, manifest: Manifest, new_files: dict[str, bytes] | None = None
) -> None:
    """Update a bundle directory in place: ``new_files`` written (and synced) first, then the
    manifest replaced in one rename, so a reader sees the old bundle or the new one, never a
    manifest naming a half-written file. Every file the manifest names must be hashed in it."""
    directory = Path(directory)
    require_directory(directory)
    target = directory / MANIFEST_FILE
    mode = stat.S_IMODE(target.stat().st_mode)
    for name, data in (new_files or {}).items():
        if manifest.files.get(name) != sha256_bytes(data):
            raise BundleError(f"{directory}: field 'files.{name}' is not the new file's sha256")
        _write_synced(directory / name, data, mode)
    _write_synced(target, (manifest.model_dump_json(indent=2) + "\n").encode(), mode)
