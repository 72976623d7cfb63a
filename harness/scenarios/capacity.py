"""Out-of-memory as data (find_max): the largest batch size and the longest prompt that fit this device for a model.

Each trial is one untimed generation; a trial that runs out of memory (CUDA OOM, or on CPUs the worker's
address-space limit) counts as "does not fit" and the search goes on in the same process. Sizes double from 1 until
one fails or the ceiling is reached, then the gap between the last fit and the first failure is bisected. Both are
recorded: the figure is the largest that fit, `first_failed` the smallest that did not (null: none did).
"""

import gc
import resource
from pathlib import Path

from harness.backends.base import Backend
from harness.measure.memory import MIB, is_out_of_memory
from harness.measure.recorder import Recorder
from harness.scenarios.speed import require_token_times, synthetic_prompts


def largest_that_fits(fits, ceiling: int) -> tuple[int | None, int | None]:
    """(largest n in 1..ceiling with fits(n), smallest n tried without), for a `fits` that holds up to some n."""
    good, bad, n = None, None, 1
    while bad is None and (good is None or good < ceiling):
        if fits(n):
            good, n = n, min(2 * n, ceiling)
        else:
            bad = n
    if good is None:
        return None, bad
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, bad


def _bound_cpu_memory() -> int:
    """The worker's address-space limit in MiB. Unless one was set (--memory-limit), it is set here to what the
    process maps now plus the RAM available now: on a CPU, "fits" must mean fits without swapping or the OOM killer."""
    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        soft = mapped + psutil.virtual_memory().available
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return soft // MIB


def run_find_max(backend: Backend, params: dict, recorder: Recorder) -> None:
    require_token_times(backend, "find_max")
    pool, output_tokens = backend.prompt_token_pool(), params["output_tokens"]
    info = backend.info()
    memory_limit_mib = _bound_cpu_memory() if info.device == "cpu" else None

    def fits(batch_size: int, prompt_tokens: int) -> bool:
        try:
            backend.generate(synthetic_prompts(pool, batch_size, prompt_tokens), output_tokens)
            return True
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return False
        finally:
            gc.collect()

    context_window = info.extra.get("context_window") or params["max_prompt_tokens"]
    searches = (
        ("max_batch_size", lambda n: fits(n, params["prompt_tokens"]), params["max_batch_size"],
         {"prompt_tokens": params["prompt_tokens"]}),
        ("max_prompt_tokens", lambda n: fits(1, n), min(params["max_prompt_tokens"], context_window - output_tokens),
         {"batch_size": 1}),
    )
    for name, trial, ceiling, fixed in searches:
        good, bad = largest_that_fits(trial, ceiling)
        if good is None:
            raise MemoryError(f"{name}: not even 1 fits ({fixed}, {output_tokens} output tokens)")
        recorder.figure(name, [good], {**fixed, "output_tokens": output_tokens, "ceiling": ceiling},
                        first_failed=bad, memory_limit_mib=memory_limit_mib)
