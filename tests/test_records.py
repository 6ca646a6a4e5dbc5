"""Run records: what a run writes about itself, here the hardware line every record and seeds table carries."""

import os
import platform

import pytest

from deepdive.records import cpu_model, hardware


@pytest.mark.parametrize(
    ("capabilities", "named"),
    [({"amx_bf16": True, "avx512_bf16": True}, "AMX-BF16, AVX512-BF16"), ({"avx2": True}, "no bf16 instructions")],
)
def test_a_records_hardware_names_the_cpu_and_its_bf16_instructions(monkeypatch, capabilities, named):
    """Seeds tables from different machines differ in speed by their CPU: the record says which CPU it ran on."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.cpu.get_capabilities", lambda: capabilities)
    monkeypatch.setattr("deepdive.records.cpu_model", lambda: "Some CPU 9000")
    assert hardware() == f"{os.cpu_count()} CPU cores (Some CPU 9000, {named}), no GPU"


def test_the_cpu_model_is_linuxs_model_name_else_the_architecture(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: fpu\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert cpu_model(cpuinfo) == platform.machine()
    assert cpu_model(tmp_path / "absent") == platform.machine()
