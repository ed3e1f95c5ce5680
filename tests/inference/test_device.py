"""Devices: names resolved in one place with one-line errors; CPU answers exactly as before; on
CUDA (skipped without it) the same readings as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drustage.cli import main
from drustage.imaging import load_radiograph
from drustage.inference.bundle import load_bundle
from drustage.inference.device import autocast_dtype, cpu_computes_bfloat16, mixed_precision, resolve_device
from drustage.pipeline import Predictor
from drustage.stages import BONES


def test_names_resolve_and_auto_falls_back_to_the_cpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.parametrize("name, says", [("gpu", "expected auto, cpu"), ("cuda:x", "expected auto, cpu"),
                                        ("mps", "expected auto, cpu"), ("cuda", "CUDA is not available")])
def test_unusable_devices_are_refused_in_one_line(monkeypatch, name, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=says) as caught:
        resolve_device(name)
    assert "\n" not in str(caught.value) and repr(name) in str(caught.value)


def test_mixed_precision_leaves_cpu_arithmetic_alone():
    x = torch.randn(8, 8)
    with mixed_precision(torch.device("cpu")):
        y = x @ x
    assert y.dtype == torch.float32 and torch.equal(y, x @ x)


def test_training_asks_for_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert cpu_computes_bfloat16() is native
        assert autocast_dtype(cpu, on_cpu=True) == (torch.bfloat16 if native else None)
        assert autocast_dtype(cpu) is None  # readings stay in full precision either way
        x = torch.randn(8, 8)
        with mixed_precision(cpu, on_cpu=True):
            y = x @ x
        assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_cli_refuses_a_missing_gpu_in_one_line(trained, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = sorted((trained[0] / "young" / "images").glob("*.png"))[0]
    assert main(["predict", str(image), "--model", str(trained[1]), "--device", "cuda", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and not list(tmp_path.iterdir())


def test_onnx_runtime_stays_on_the_cpu(trained):
    bundle = load_bundle(trained[1])
    with pytest.raises(ValueError, match="onnx runtime runs on the CPU"):
        Predictor(bundle, runtime="onnx", device="cuda")


def _phantoms(trained, per_group=2):
    return [p for group in ("young", "old") for p in sorted((trained[0] / group / "images").glob("*.png"))[:per_group]]


def test_cpu_and_auto_give_the_same_answers_on_this_machine(trained, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bundle = load_bundle(trained[1])
    cpu, auto = Predictor(bundle, detection_threshold=0.0, device="cpu"), Predictor(bundle, detection_threshold=0.0)
    for path in _phantoms(trained):
        radiograph = load_radiograph(path)
        assert cpu.predict(radiograph).to_dict() == auto.predict(radiograph).to_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_readings_agree_with_the_cpu(trained):
    bundle = load_bundle(trained[1])
    cpu, gpu = Predictor(bundle, detection_threshold=0.0, device="cpu"), Predictor(bundle, detection_threshold=0.0,
                                                                                   device="cuda")
    for path in _phantoms(trained):
        radiograph = load_radiograph(path)
        expected, got = cpu.predict(radiograph).to_dict(), gpu.predict(radiograph).to_dict()
        for bone in BONES:
            # mixed precision on the GPU: boxes within 2 px, probabilities within 0.05, same reading
            assert np.abs(np.subtract(got[bone]["box"], expected[bone]["box"])).max() <= 2.0, path
            p, q = got[bone]["probabilities"], expected[bone]["probabilities"]
            assert max(abs(p[k] - q[k]) for k in p) <= 0.05, path
            assert got[bone]["prediction"] == expected[bone]["prediction"], path
