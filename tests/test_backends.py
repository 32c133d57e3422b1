"""Backends and precisions: the automatic choice and its reasons, the explicit override, the
refusal of a precision a bundle was not checked for, and a checked one becoming the default.

The bundle is the shipped ``push_t_drifting`` (copied: checks are written into its manifest).
The choice's machine facts (CPU, onnxruntime providers, OpenVINO) are passed in where a test
needs a machine this is not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.evaluation.precision_check import (
    open_loop_error,
    record_check,
    within_tolerance,
)
from policy_runtime.inference import RuntimeOptions, load_policy
from policy_runtime.inference.backends import (
    CpuInfo,
    PrecisionError,
    choose_backend,
    cpu_info,
)
from policy_runtime.inference.manifest import BundleFiles, PrecisionCheck, read_manifest
from policy_runtime.inference.openvino_runner import device_precisions

SHIPPED = Path(__file__).resolve().parents[1] / "bundles" / "push_t_drifting"
INTEL = CpuInfo("Intel(R) Xeon(R)", "GenuineIntel", ("avx512f", "amx_bf16"))
AMD = CpuInfo("AMD EPYC 7B13", "AuthenticAMD", ("avx2",))
CPU_ONLY = ["CPUExecutionProvider"]


def _check(precision: str, accepted: bool, backend: str = "openvino") -> PrecisionCheck:
    return PrecisionCheck(
        backend=backend,
        precision=precision,
        accepted=accepted,
        task="push_t",
        episodes=200,
        start_seed=100_000,
        success_rate=0.87 if accepted else 0.80,
        fp32_success_rate=0.87,
        tolerance_points=2.0,
        open_loop_max_abs_error=0.01,
        open_loop_mean_abs_error=0.001,
        device="test",
    )


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(SHIPPED, copy)
    manifest = read_manifest(BundleFiles(copy))  # the shipped bundle's own checks left out
    (copy / "manifest.json").write_text(
        manifest.model_copy(update={"precision_checks": []}).model_dump_json(indent=2)
    )
    return copy


def test_the_automatic_backend_is_a_gpu_provider_then_openvino_on_intel_then_onnxruntime():
    manifest = read_manifest(BundleFiles(SHIPPED))
    auto = RuntimeOptions()

    def choose(**machine: object) -> tuple[str, str]:
        choice = choose_backend(auto, manifest, device_precisions={"fp32", "bf16"}, **machine)  # type: ignore[arg-type]
        return choice.backend, " | ".join(choice.reasons)

    backend, why = choose(
        cpu=INTEL, ort_providers=["CUDAExecutionProvider", *CPU_ONLY], openvino=True
    )
    assert backend == "onnxruntime" and "CUDAExecutionProvider" in why
    backend, why = choose(cpu=INTEL, ort_providers=CPU_ONLY, openvino=True)
    assert backend == "openvino" and "Intel CPU" in why and "amx_bf16" in why
    backend, why = choose(cpu=AMD, ort_providers=CPU_ONLY, openvino=True)
    assert backend == "onnxruntime" and "not an Intel CPU" in why
    backend, why = choose(cpu=INTEL, ort_providers=CPU_ONLY, openvino=False)
    assert backend == "onnxruntime" and "OpenVINO is not installed" in why
    # Naming onnxruntime's providers, or the backend, overrides the choice.
    named = choose_backend(
        RuntimeOptions(providers=("cpu",)),
        manifest,
        cpu=INTEL,
        ort_providers=CPU_ONLY,
        openvino=True,
    )
    assert named.backend == "onnxruntime" and named.providers == ("CPUExecutionProvider",)
    with pytest.raises(ValueError, match=r"openvino is not installed \(pip install"):
        choose_backend(RuntimeOptions(backend="openvino"), manifest, openvino=False)
    with pytest.raises(ValueError, match="backend: 'tensorflow' is not one of"):
        choose_backend(RuntimeOptions(backend="tensorflow"), manifest)


def test_a_low_precision_runs_only_when_checked_or_forced_and_where_the_hardware_has_it():
    manifest = read_manifest(BundleFiles(SHIPPED))
    machine = {"cpu": INTEL, "ort_providers": CPU_ONLY, "openvino": True}

    def choose(options: RuntimeOptions, checks: list[PrecisionCheck], hardware: set[str]) -> str:
        m = manifest.model_copy(update={"precision_checks": checks})
        return choose_backend(options, m, device_precisions=hardware, **machine).precision  # type: ignore[arg-type]

    bf16 = {"fp32", "bf16"}
    # No check: fp32, whatever the hardware has. A passed check: the default where it runs.
    assert choose(RuntimeOptions(), [], bf16) == "fp32"
    assert choose(RuntimeOptions(), [_check("bf16", True)], bf16) == "bf16"
    assert choose(RuntimeOptions(), [_check("bf16", True)], {"fp32"}) == "fp32"
    assert choose(RuntimeOptions(), [_check("bf16", False)], bf16) == "fp32"
    # fp16 only when asked for (slower than fp32 on CPUs), even when checked.
    assert choose(RuntimeOptions(), [_check("fp16", True)], {"fp32", "fp16"}) == "fp32"
    assert (
        choose(RuntimeOptions(precision="fp16"), [_check("fp16", True)], {"fp32", "fp16"}) == "fp16"
    )
    # A check on the other backend does not count.
    assert choose(RuntimeOptions(), [_check("bf16", True, "onnxruntime")], bf16) == "fp32"
    with pytest.raises(PrecisionError, match="not checked at bf16 on openvino"):
        choose(RuntimeOptions(precision="bf16"), [_check("bf16", False)], bf16)
    forced = RuntimeOptions(precision="bf16", force_precision=True)
    assert choose(forced, [], bf16) == "bf16"
    with pytest.raises(PrecisionError, match="bf16 does not run on openvino here"):
        choose(forced, [], {"fp32"})
    with pytest.raises(PrecisionError, match="does not run on onnxruntime"):
        choose(
            RuntimeOptions(backend="onnxruntime", precision="bf16", force_precision=True), [], bf16
        )
    assert choose(RuntimeOptions(precision="fp32"), [_check("bf16", True)], bf16) == "fp32"


def test_cpu_info_names_the_model_vendor_and_the_inference_flags(tmp_path: Path):
    text = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\n"
    )
    (tmp_path / "cpuinfo").write_text(text)
    info = cpu_info(tmp_path / "cpuinfo")
    assert info.intel and info.model == "Intel(R) Xeon(R) Platinum"
    assert info.flags == ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")


def test_a_recorded_check_keeps_the_hashes_and_makes_its_precision_the_default(bundle: Path):
    before = json.loads((bundle / "manifest.json").read_text())
    assert "precision_checks" not in before  # none: not written (older runtimes read it)
    mode = (bundle / "manifest.json").stat().st_mode
    reference = load_policy(bundle, options=RuntimeOptions(backend="openvino", precision="fp32"))
    with pytest.raises(PrecisionError, match="precision_checks accept fp32"):
        load_policy(bundle, options=RuntimeOptions(backend="openvino", precision="bf16"))
    hardware = device_precisions()
    low = "bf16" if "bf16" in hardware else "fp16" if "fp16" in hardware else None
    if low is None:
        pytest.skip(f"this CPU computes only {hardware} in OpenVINO")
    forced = load_policy(
        bundle, options=RuntimeOptions(backend="openvino", precision=low, force_precision=True)
    )
    error = open_loop_error(reference, forced)
    assert 0 < error.max() < 0.1  # changed, a little (normalised units)
    record_check(
        bundle, _check(low, True).model_copy(update={"open_loop_max_abs_error": float(error.max())})
    )
    after = json.loads((bundle / "manifest.json").read_text())
    assert after["files"] == before["files"] and after["graphs"] == before["graphs"]
    assert (bundle / "manifest.json").stat().st_mode == mode  # readable as before
    assert sorted(p.name for p in bundle.iterdir()) == ["generator.onnx", "manifest.json"]
    assert [c["precision"] for c in after["precision_checks"]] == [low]
    default = load_policy(bundle, options=RuntimeOptions(backend="openvino"))
    assert default.precision == low
    # Same observations and noise: within the recorded bound of fp32 (the same computation).
    assert np.array_equal(open_loop_error(reference, default), error)
    # A second check of the same precision replaces the first.
    record_check(bundle, _check(low, False))
    checks = json.loads((bundle / "manifest.json").read_text())["precision_checks"]
    assert len(checks) == 1 and checks[0]["accepted"] is False
    assert load_policy(bundle, options=RuntimeOptions(backend="openvino")).precision == "fp32"


def test_prt_eval_refuses_an_unchecked_precision_before_running_anything(bundle: Path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--policy",
            str(bundle),
            "--task",
            "push_t",
            "--precision",
            "bf16",
            "--backend",
            "openvino",
        ],
    )
    assert result.exit_code == 1
    assert "not checked at bf16 on openvino" in result.output


def test_a_drop_of_exactly_the_tolerance_is_accepted_and_one_episode_more_is_not():
    assert within_tolerance(0.86, 0.84, 2.0)  # 2.0000000000000018 points in floating point
    assert within_tolerance(0.865, 0.855, 2.0) and within_tolerance(0.80, 0.85, 2.0)
    assert not within_tolerance(0.86, 0.835, 2.0)
