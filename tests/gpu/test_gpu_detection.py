"""The card is recognised: `bench profiles detect` names its profile with the memory the driver reports, and a run
held against another card's profile is refused, naming this one."""

import re

import pytest

from harness.cli import main

from .conftest import expected_profile, write_suite

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_detection_names_the_cards_profile_and_the_memory_the_driver_reports(card, capsys):
    from harness.hardware import memory_gb

    assert main(["profiles", "detect", "--device", "cuda"]) == 0
    profile, reason = capsys.readouterr().out.strip().split(": ", 1)
    assert profile == expected_profile(card), reason
    assert repr(card.name) in reason
    # GB (1e9 bytes) as NVML counts them: an H200's 143,771 MiB are 150.75 GB; read as GiB they would be 140.4,
    # 7% short, outside this 2%.
    assert memory_gb("cuda") == pytest.approx(card.memory_bytes / 1e9, rel=0.02)
    stated = re.search(r"([\d.]+) GB is within", reason)
    if stated:  # profiles with a memory range say where the card's memory fell
        assert float(stated.group(1)) == pytest.approx(card.memory_bytes / 1e9, rel=0.02), reason


def test_a_run_held_against_another_cards_profile_is_refused_naming_this_one(card, tmp_path, capsys):
    other = "h200" if "RTX 4090" in card.name else "rtx4090"
    suite = write_suite(tmp_path, ["tiny-dense"], [{"name": "latency", "prompt_tokens": 8, "output_tokens": 2}])
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--profile", other, "--out", str(out), "--no-progress"]) == 2
    error, hint = capsys.readouterr().err.splitlines()  # one line and its hint, nothing else
    assert error.startswith(f"bench: error: this machine does not match profile {other}: ")
    assert repr(card.name) in error
    assert hint.startswith("hint: ") and "--force" in hint
    assert not out.exists()  # refused before anything was written

