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


def test_the_reset_between_cells_reaches_mkls_buffers_where_torch_has_mkl():
    """reset_peak_rss frees MKL's cached work buffers through libtorch_cpu's mkl_serv_free_buffers, and says nothing
    where the symbol is missing: this fails if a torch release stops exporting it from a build that has MKL."""
    import ctypes
    from pathlib import Path

    import pytest
    import torch

    if not torch.backends.mkl.is_available():
        pytest.skip("this torch has no MKL (nothing to free)")
    library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    assert hasattr(library, "mkl_serv_free_buffers")
