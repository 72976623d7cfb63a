"""Peak resident memory of this process and its children, sampled in a background thread (rss.v1)."""

import threading

import psutil

MIB = 1024 * 1024


def _tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # a child that ended between listing and reading
            pass
    return total


class RssSampler:
    """Samples RSS at most `interval_s` apart (METRICS.md asks for <= 10 ms) and once more at stop."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, _tree_rss(self._process))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stops sampling and returns the peak in MiB."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak_bytes / MIB
