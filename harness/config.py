"""Suites: what to run, as validated frozen specs. Loading has no side effects (no environment, no network)."""

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UnknownNameError
from harness.hardware import DEVICES, DTYPES
from harness.quality.tasks import load_task, task_names
from harness.yamlfile import YamlDoc

SUITES_DIR = Path(__file__).resolve().parent.parent / "tasks" / "suites"

# Each scenario's parameters and their defaults; a parameter's type is its default's type.
SCENARIO_DEFAULTS: dict[str, dict] = {
    "latency": {"prompt_tokens": 128, "output_tokens": 32, "engine": {}},
    "throughput": {"prompt_tokens": 64, "output_tokens": 16, "batch_sizes": [1, 4, 16], "engine": {}},
    # limit 0: the task's own limit.
    "quality": {"task": "mmlu", "limit": 0, "seed": 1234, "engine": {}},
    # Ceilings of the search (the context window bounds max_prompt_tokens too).
    "find_max": {"prompt_tokens": 128, "output_tokens": 4, "max_batch_size": 1024, "max_prompt_tokens": 32768,
                 "engine": {}},
    # Served load (an OpenAI-compatible server): prompts "synthetic" (seeded, prompt_tokens long) or a task's;
    # a sweep over concurrency, or over Poisson/gamma arrival rates (req/s) when `rates` is given; with `slo`
    # (ttft_ms, tpot_ms, e2e_latency_ms limits at a percentile) goodput, and with search_rates [low, high] a
    # bisection for the highest rate that meets the SLOs.
    "served": {"endpoint": "completions", "prompts": "synthetic", "prompt_tokens": 128, "output_tokens": 32,
               "requests": 16, "concurrency": [1], "rates": [], "burstiness": 1.0, "slo": {}, "search_rates": [],
               "search_steps": 4, "timeout_s": 120.0, "seed": 1234},
}
# Lists of positive numbers (not integers); may be empty.
NUMBER_LISTS = ("rates", "search_rates")
SERVED_ENDPOINTS = ("completions", "chat")
SLO_FIELDS = ("ttft_ms", "tpot_ms", "e2e_latency_ms", "percentile")
SERVER_FIELDS = {"launch", "base_url", "model_name", "python", "args", "api_key", "start_timeout_s"}
# Engine settings a scenario may ask the backend for (the efficiency ladder); `step` names the setting in rows.
ENGINE_OPTIONS = {
    "step": None, "dtype": ("fp32", "bf16", "fp16"), "attn_implementation": ("eager", "sdpa"),
    "cache_implementation": ("dynamic", "static"), "quantize": ("int8", "int4"), "compile": (True, False),
    # vLLM: GPUs per pipeline stage and stages; ray: vLLM's Ray backend, for more than one node.
    "tensor_parallel_size": (1, 2, 4, 8), "pipeline_parallel_size": (1, 2, 4, 8), "ray": (True, False),
    # vLLM without torch.compile and CUDA graphs: the engine starts in seconds rather than minutes; the longest
    # sequence it plans its KV cache for (default: the model's context window).
    "enforce_eager": (True, False), "max_model_len": None,
    # transformers across devices (accelerate): a placement, and each device's limit ({0: 20GiB, cpu: 64GiB}).
    "device_map": ("auto", "balanced", "balanced_low_0", "sequential"), "max_memory": None,
}
MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*[KMGT]i?B")


@dataclass(frozen=True)
class MeasureSpec:
    warmup: int = 1
    repetitions: int = 5
    min_seconds: float = 0.0


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    params: dict
    models: tuple[str, ...] = ()  # the suite's models this scenario runs on; empty: all of them

    @property
    def task(self) -> tuple[str, int]:
        """The task this scenario runs and its version: speed scenarios run seeded synthetic prompts."""
        if self.name == "quality":
            return self.params["task"], load_task(self.params["task"]).version
        if self.name == "served" and self.params["prompts"] != "synthetic":
            return self.params["prompts"], load_task(self.params["prompts"]).version
        return "synthetic", 1


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    description: str
    models: tuple[str, ...]
    backends: tuple[str, ...]
    scenarios: tuple[ScenarioSpec, ...]
    device: str = "auto"
    dtype: str = "auto"
    measure: MeasureSpec = MeasureSpec()
    cell_timeout_s: float = 1800.0
    cell_memory_limit_mib: int | None = None  # each cell worker's address-space limit; None: no limit
    report_claims: bool = False  # write claims.md / claims.csv (verdicts from this run's rows) when done
    # Models added on a given hardware profile (big profiles get big models), by profile name.
    profile_models: dict = dataclasses.field(default_factory=dict)
    # The OpenAI-compatible server the `openai` backend talks to: {base_url, model_name} of a running one, or
    # {launch: transformers|vllm, python, args} to start one per model on 127.0.0.1 (harness/backends/server.py).
    server: dict = dataclasses.field(default_factory=dict)
    path: str = ""

    def replace(self, **changes) -> "SuiteSpec":
        return dataclasses.replace(self, **changes)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_scenario_params(doc: YamlDoc, path: tuple, name: str, given: dict) -> dict:
    defaults = SCENARIO_DEFAULTS[name]
    params = dict(defaults)
    for key, value in given.items():
        where = (*path, key)
        if key not in defaults:
            raise doc.error(where, f"unknown parameter of scenario {name}", f"known: {', '.join(sorted(defaults))}")
        default = defaults[key]
        if key in NUMBER_LISTS:
            if not isinstance(value, list) or not all(_positive_number(v) for v in value):
                raise doc.error(where, f"must be a list of positive numbers, got {value!r}")
        elif isinstance(default, list):
            if not isinstance(value, list) or not value or not all(_positive_int(v) for v in value):
                raise doc.error(where, f"must be a non-empty list of positive integers, got {value!r}")
        elif key == "slo":
            _check_slo(doc, where, value)
        elif isinstance(default, dict):
            _check_engine(doc, where, value)
        elif isinstance(default, float):
            if not _positive_number(value):
                raise doc.error(where, f"must be a positive number, got {value!r}")
        elif isinstance(default, int):
            if not _positive_int(value):
                raise doc.error(where, f"must be a positive integer, got {value!r}")
        elif key == "task" and value not in task_names():
            raise doc.error(where, f"unknown task {value!r}", f"known: {', '.join(task_names())}")
        elif key == "prompts" and value != "synthetic" and value not in task_names():
            raise doc.error(where, f"must be 'synthetic' or a task, got {value!r}", f"tasks: {', '.join(task_names())}")
        elif key == "endpoint" and value not in SERVED_ENDPOINTS:
            raise doc.error(where, f"must be one of {', '.join(SERVED_ENDPOINTS)}, got {value!r}")
        params[key] = value
    if params.get("search_rates") and (len(params["search_rates"]) != 2 or not params["slo"]):
        raise doc.error((*path, "search_rates"), "must be [low, high] req/s, with an `slo` to search for")
    return params


def _check_slo(doc: YamlDoc, path: tuple, slo) -> None:
    doc.check_keys(path, slo, set(SLO_FIELDS), set())
    for key, value in slo.items():
        if not _positive_number(value) or (key == "percentile" and value > 100):
            raise doc.error((*path, key), f"must be a positive number{' <= 100' if key == 'percentile' else ''}, "
                                          f"got {value!r}")


def _check_server(doc: YamlDoc, server) -> dict:
    from harness.backends.server import SERVER_KINDS

    doc.check_keys(("server",), server, SERVER_FIELDS, set())
    if ("launch" in server) == ("base_url" in server):
        raise doc.error(("server",), "needs exactly one of `launch` (a server to start) and `base_url`")
    if "launch" in server and server["launch"] not in SERVER_KINDS:
        raise doc.error(("server", "launch"), f"must be one of {', '.join(SERVER_KINDS)}, got {server['launch']!r}")
    if "args" in server and not (isinstance(server["args"], list) and all(isinstance(a, str) for a in server["args"])):
        raise doc.error(("server", "args"), "must be a list of strings")
    for key in SERVER_FIELDS - {"args", "start_timeout_s"}:
        if key in server and not (isinstance(server[key], str) and server[key]):
            raise doc.error(("server", key), "must be a non-empty string")
    if "start_timeout_s" in server and not _positive_number(server["start_timeout_s"]):
        raise doc.error(("server", "start_timeout_s"), "must be a number of seconds > 0")
    return server


def _check_engine(doc: YamlDoc, path: tuple, engine) -> None:
    doc.check_keys(path, engine, set(ENGINE_OPTIONS), {"step"})
    if not isinstance(engine["step"], str) or not engine["step"]:
        raise doc.error((*path, "step"), "must name the setting")
    for key, allowed in ENGINE_OPTIONS.items():
        if allowed and key in engine and engine[key] not in allowed:
            raise doc.error((*path, key), f"must be one of {', '.join(map(str, allowed))}, got {engine[key]!r}")
    length = engine.get("max_model_len")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 1):
        raise doc.error((*path, "max_model_len"), f"must be a positive integer (tokens), got {length!r}")
    if "max_memory" in engine:
        limits = engine["max_memory"]
        if "device_map" not in engine:
            raise doc.error((*path, "max_memory"), "applies only with a device_map")
        if not isinstance(limits, dict) or not limits or not all(
                (key in ("cpu", "mps") or (isinstance(key, int) and key >= 0))
                and (_positive_int(size) or (isinstance(size, str) and MEMORY_SIZE.fullmatch(size)))
                for key, size in limits.items()):
            raise doc.error((*path, "max_memory"), "must map GPU indices and `cpu` to sizes (bytes, or like 20GiB), "
                                                   f"got {limits!r}")


def _profile_models(doc: YamlDoc, mapping) -> dict:
    from harness.profiles import profile_names

    doc.check_keys(("profile_models",), mapping, set(profile_names()), set())
    return {name: _string_list(doc, ("profile_models", name), models) for name, models in mapping.items()}


def _string_list(doc: YamlDoc, path: tuple, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise doc.error(path, "must be a non-empty list of names")
    return tuple(value)


def load_suite_file(file: Path) -> SuiteSpec:
    from harness.backends import BACKENDS
    from harness.scenarios import SCENARIOS

    doc = YamlDoc(file)
    data = doc.data
    fields = {"name", "description", "models", "backends", "scenarios", "device", "dtype", "measure", "report_claims",
              "cell_timeout_s", "cell_memory_limit_mib", "profile_models", "server"}
    doc.check_keys((), data, fields, {"name", "models", "scenarios"})
    models = _string_list(doc, ("models",), data["models"])
    backends = _string_list(doc, ("backends",), data.get("backends", ["transformers"]))
    for i, backend in enumerate(backends):
        if backend not in BACKENDS.names():
            raise doc.error(("backends", i), f"unknown backend {backend!r}", f"known: {', '.join(BACKENDS.names())}")
    for key, allowed in (("device", DEVICES), ("dtype", DTYPES)):
        if data.get(key, "auto") not in allowed:
            raise doc.error((key,), f"must be one of {', '.join(allowed)}, got {data[key]!r}")
    measure = data.get("measure", {})
    doc.check_keys(("measure",), measure, {"warmup", "repetitions", "min_seconds"}, set())
    for key in ("warmup", "repetitions"):
        value = measure.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "warmup" else 1):
            raise doc.error(("measure", key), f"must be an integer >= {0 if key == 'warmup' else 1}, got {value!r}")
    min_seconds = measure.get("min_seconds", 0.0)
    if not isinstance(min_seconds, (int, float)) or isinstance(min_seconds, bool) or min_seconds < 0:
        raise doc.error(("measure", "min_seconds"), f"must be a number >= 0, got {min_seconds!r}")
    timeout = data.get("cell_timeout_s", SuiteSpec.cell_timeout_s)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise doc.error(("cell_timeout_s",), f"must be a number of seconds > 0, got {timeout!r}")
    memory_limit = data.get("cell_memory_limit_mib")
    if memory_limit is not None and not _positive_int(memory_limit):
        raise doc.error(("cell_memory_limit_mib",), f"must be a positive integer (MiB) or null, got {memory_limit!r}")
    scenarios_data = data["scenarios"]
    if not isinstance(scenarios_data, list) or not scenarios_data:
        raise doc.error(("scenarios",), "must be a non-empty list")
    scenarios = []
    for i, item in enumerate(scenarios_data):
        path = ("scenarios", i)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise doc.error(path, "each scenario is a mapping with a 'name'")
        if item["name"] not in SCENARIOS.names():
            raise doc.error((*path, "name"), f"unknown scenario {item['name']!r}",
                            f"known: {', '.join(SCENARIOS.names())}")
        given = {k: v for k, v in item.items() if k not in ("name", "models")}
        only = _string_list(doc, (*path, "models"), item["models"]) if "models" in item else ()
        for i, model in enumerate(only):
            if model not in models:
                raise doc.error((*path, "models", i), f"{model!r} is not one of the suite's models")
        scenarios.append(ScenarioSpec(item["name"], _check_scenario_params(doc, path, item["name"], given), only))
    return SuiteSpec(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        models=models,
        backends=backends,
        scenarios=tuple(scenarios),
        device=data.get("device", "auto"),
        dtype=data.get("dtype", "auto"),
        measure=MeasureSpec(measure.get("warmup", 1), measure.get("repetitions", 5), float(min_seconds)),
        cell_timeout_s=float(timeout),
        cell_memory_limit_mib=memory_limit,
        report_claims=bool(data.get("report_claims", False)),
        profile_models=_profile_models(doc, data.get("profile_models", {})),
        server=_check_server(doc, data["server"]) if "server" in data else {},
        path=str(file),
    )


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> SuiteSpec:
    """A suite by name (tasks/suites/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_suite_file(path)
    file = SUITES_DIR / f"{name_or_path}.yaml"
    if not file.exists():
        raise UnknownNameError("suite", name_or_path, suite_names(), hint="or pass a path to a suite YAML file")
    return load_suite_file(file)
