import subprocess
import sys


def test_peak_rss_sees_a_spike_that_is_already_gone():
    """A fresh process allocates and frees 300 MiB; its peak RSS still shows them (the kernel's high-water mark)."""
    code = ("from harness.measure.memory import peak_rss_mib; before = peak_rss_mib(); "
            "block = bytearray(300 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); del block; "
            "print(before, peak_rss_mib())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after = map(float, done.stdout.split())
    assert 0 < before and after - before >= 290
