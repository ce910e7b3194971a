"""Arithmetic is chosen by what is fast on the CPU at hand, not by what exists: int8 products on
torch._int_mm where VNNI or AMX run it, as float32 GEMMs of the same integers where it is a
plain loop, and by a cached timed probe where the capabilities cannot tell."""

import json

import pytest
import torch

from colortrack.model import probe
from colortrack.model.device import (
    Cpu,
    arithmetic_report,
    encoder_dtype,
    int8_products,
    native_bf16,
    this_cpu,
)

SAPPHIRE_RAPIDS = Cpu("Intel Xeon Platinum 8480+", "AVX512", vnni=True, amx=True, bf16=True)
CASCADE_LAKE = Cpu("Intel Xeon Gold 6248", "AVX512", vnni=True, amx=False, bf16=False)
SKYLAKE_X = Cpu("Intel Xeon Gold 6148", "AVX512", vnni=False, amx=False, bf16=False)
ZEN3 = Cpu("AMD EPYC 7B13", "AVX2", vnni=False, amx=False, bf16=False)
# AVX-VNNI (256-bit) only: PyTorch's _int_mm takes oneDNN on AVX512-VNNI alone.
ALDER_LAKE = Cpu("12th Gen Intel Core i7-1260P", "AVX2", vnni=False, amx=False, bf16=False)
GRAVITON = Cpu("Neoverse-V1", "SVE256", vnni=False, amx=False, bf16=False)


def never_probe(key):
    raise AssertionError("the capabilities tell: no probe needed")


@pytest.mark.parametrize("cpu,arithmetic", [
    (SAPPHIRE_RAPIDS, "int_mm"), (CASCADE_LAKE, "int_mm"), (SKYLAKE_X, "float"),
    (ZEN3, "float"), (ALDER_LAKE, "float")])
def test_x86_cpus_are_told_apart_by_their_capabilities(cpu, arithmetic):
    chosen = int8_products(cpu, has_int_mm=True, probe_cpu=never_probe)
    assert chosen.arithmetic == arithmetic and chosen.why


def test_a_pytorch_without_int_mm_multiplies_int8_in_float():
    chosen = int8_products(SAPPHIRE_RAPIDS, has_int_mm=False, probe_cpu=never_probe)
    assert chosen.in_float and "_int_mm" in chosen.why


@pytest.mark.parametrize("int_mm_seconds,arithmetic", [(0.001, "int_mm"), (0.1, "float")])
def test_other_cpus_take_whichever_the_probe_timed_faster(tmp_path, int_mm_seconds, arithmetic):
    def probe_cpu(key):
        return probe.faster_int8(key, lambda: {"int_mm": int_mm_seconds, "float": 0.01},
                                 tmp_path / "arithmetic.json")

    chosen = int8_products(GRAVITON, has_int_mm=True, probe_cpu=probe_cpu)
    assert chosen.arithmetic == arithmetic and "timed on this CPU" in chosen.why


def test_emulated_bf16_is_not_used_by_the_encoder():
    cpu = torch.device("cpu")
    for mocked in (SKYLAKE_X, ZEN3, GRAVITON):
        assert not native_bf16(cpu, mocked)
    assert native_bf16(cpu, SAPPHIRE_RAPIDS) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert encoder_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)


class Counter:
    """A probe's measurement that counts its calls."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def __call__(self):
        self.calls += 1
        return dict(self.seconds)


def test_the_probe_is_measured_once_then_read_from_the_cache(tmp_path):
    path, key = tmp_path / "cache" / "arithmetic.json", probe.machine_key("a CPU", "DEFAULT")
    measure = Counter({"int_mm": 0.002, "float": 0.003})
    assert probe.faster_int8(key, measure, path) == ("int_mm", measure.seconds, False)
    assert json.loads(path.read_text())["key"] == key
    assert probe.faster_int8(key, measure, path) == ("int_mm", measure.seconds, True)
    assert measure.calls == 1


def test_a_stale_or_damaged_cache_is_measured_again_and_rewritten(tmp_path):
    path, key = tmp_path / "arithmetic.json", probe.machine_key("a CPU", "DEFAULT")
    measure = Counter({"int_mm": 0.004, "float": 0.003})
    probe.faster_int8(probe.machine_key("another CPU", "DEFAULT"), measure, path)  # stale
    for damaged in (None, "{not json", '{"key": 1}', json.dumps({"key": key, "seconds": {
            "int_mm": -1.0, "float": 0.003}})):
        if damaged is not None:
            path.write_text(damaged)
        calls = measure.calls
        assert probe.faster_int8(key, measure, path) == ("float", measure.seconds, False)
        assert measure.calls == calls + 1
        assert json.loads(path.read_text())["key"] == key
    assert probe.faster_int8(key, measure, path)[2]  # and then read


def test_a_cache_that_cannot_be_written_costs_only_a_probe(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder should be
    measure = Counter({"int_mm": 0.004, "float": 0.003})
    key = probe.machine_key("a CPU", "DEFAULT")
    assert probe.faster_int8(key, measure, blocked / "arithmetic.json")[0] == "float"


def test_the_cache_lives_where_the_user_points_it(monkeypatch, tmp_path):
    monkeypatch.setenv("COLORTRACK_CACHE", str(tmp_path / "mine"))
    assert probe.cache_path() == tmp_path / "mine" / "arithmetic.json"
    monkeypatch.delenv("COLORTRACK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probe.cache_path() == tmp_path / "xdg" / "colortrack" / "arithmetic.json"


def test_the_probe_times_both_arithmetics_on_this_cpu():
    seconds = probe.time_products(repeats=1)
    assert set(seconds) == set(probe.ARITHMETICS) and all(s > 0 for s in seconds.values())


def test_info_names_the_cpu_and_each_stage_arithmetic(capsys):
    from colortrack.cli import main

    assert main(["info", "--preset", "cpu"]) == 0
    report = capsys.readouterr().out
    assert f"cpu: {this_cpu()}" in report and "GFLOPs" in report
    for stage in ("encoder:", "window products: int8", "top-k and copy:"):
        assert stage in report
    assert "window products: float32" in arithmetic_report("fp32")
    assert main(["info", "--precision", "fp8"]) == 2  # refused before any model is described
    assert "unknown precision 'fp8'" in capsys.readouterr().err
