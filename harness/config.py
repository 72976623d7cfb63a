"""Suites: what to run, as frozen specs (harness/specs.py) validated from plain mappings: a suite file, a command
line's overrides, or a run folder's resolved_config.yaml, all through `suite_from_data`. Loading has no side effects
(no environment, no network)."""

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Discriminator, Field, TypeAdapter, ValidationInfo, field_validator, model_validator

from harness.errors import ConfigError, UnknownNameError
from harness.hardware import DEVICES, DTYPES
from harness.quality.tasks import find_task, load_task
from harness.specs import Count, Name, Names, Number, PositiveInt, PositiveNumber, Spec, Text, refuse, validate
from harness.yamlfile import YamlDoc

SUITES_DIR = Path(__file__).resolve().parent.parent / "tasks" / "suites"
MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*[KMGT]i?B")
Setting = Literal[True, False]


class EngineSettings(Spec):
    """Engine settings a scenario asks the backend for (the efficiency ladder); `step` names the setting in rows."""

    step: Name | None = None
    dtype: Literal["fp32", "bf16", "fp16"] | None = None
    attn_implementation: Literal["eager", "sdpa"] | None = None
    cache_implementation: Literal["dynamic", "static"] | None = None
    quantize: Literal["int8", "int4"] | None = None
    compile: Setting | None = None
    # vLLM: GPUs per pipeline stage and stages; ray: vLLM's Ray backend, for more than one node.
    tensor_parallel_size: Literal[1, 2, 4, 8] | None = None
    pipeline_parallel_size: Literal[1, 2, 4, 8] | None = None
    ray: Setting | None = None
    # vLLM without torch.compile and CUDA graphs: the engine starts in seconds rather than minutes; the longest
    # sequence it plans its KV cache for (default: the model's context window).
    enforce_eager: Setting | None = None
    max_model_len: PositiveInt | None = None
    # transformers across devices (accelerate): a placement, and each device's limit ({0: 20GiB, cpu: 64GiB}).
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = None
    max_memory: dict | None = None
    # transformers' assisted generation (speculative decoding), latency scenario only (it takes one sequence): draft
    # tokens from n-grams of the sequence so far, so many at a time, or from a smaller model with the same tokenizer
    # (an alias or a folder), checked by the model in one forward pass.
    prompt_lookup_num_tokens: PositiveInt | None = None
    assistant_model: Name | None = None

    @property
    def speculative(self) -> bool:
        return self.prompt_lookup_num_tokens is not None or self.assistant_model is not None

    @model_validator(mode="after")
    def _consistent(self):
        given = self.model_dump(exclude_none=True)
        if given and self.step is None:
            raise refuse("missing required field 'step' (it names the setting)")
        if self.prompt_lookup_num_tokens is not None and self.assistant_model is not None:
            raise refuse("takes prompt_lookup_num_tokens or assistant_model, not both: each is a way of drafting",
                         ("assistant_model",))
        if self.max_memory is not None:
            if self.device_map is None:
                raise refuse("applies only with a device_map", ("max_memory",))
            if not self.max_memory or not all(_device_key(key) and _memory_size(size)
                                              for key, size in self.max_memory.items()):
                raise refuse(f"must map GPU indices and `cpu` to sizes (bytes, or like 20GiB), got {self.max_memory!r}",
                             ("max_memory",))
        return self


def _device_key(key) -> bool:
    return key in ("cpu", "mps") or (type(key) is int and key >= 0)


def _memory_size(size) -> bool:
    return (type(size) is int and size >= 1) or (isinstance(size, str) and bool(MEMORY_SIZE.fullmatch(size)))


class Slo(Spec):
    """Served-load limits (ms) that must hold at `percentile`."""

    ttft_ms: PositiveNumber | None = None
    tpot_ms: PositiveNumber | None = None
    e2e_latency_ms: PositiveNumber | None = None
    percentile: Annotated[PositiveNumber, Field(le=100)] | None = None


class MeasureSpec(Spec):
    """How a timed figure is repeated (harness.measure.stats.RepetitionPolicy, whose fields these are): `warmup`
    untimed runs, then a fixed protocol (at least `repetitions` runs and `min_seconds`) or, with `target_ci`, runs until
    the 95% interval of the median is within +-target_ci of it (a fraction: 0.02 is +-2%), at least
    `min_repetitions` of them, for at most `max_seconds`. Leading runs still warming up are dropped either way."""

    warmup: Count = 1
    repetitions: PositiveInt = 5
    min_seconds: Number = 0.0
    target_ci: Annotated[PositiveNumber, Field(lt=1)] | None = None
    min_repetitions: PositiveInt = 6
    max_seconds: PositiveNumber = 60.0


def known_backends(backends: tuple[str, ...]) -> tuple[str, ...]:
    from harness.backends import BACKENDS

    for i, backend in enumerate(backends):
        if backend not in BACKENDS.names():
            raise refuse(f"unknown backend {backend!r}", (i,), f"known: {', '.join(BACKENDS.names())}")
    return backends


KnownBackends = AfterValidator(known_backends)  # a suite's or a scenario's backends: names of the registry


class ScenarioBase(Spec):
    """A scenario of a suite: its name, the suite's models it runs on (empty: all of them), the backends it runs on
    (empty: the suite's), its parameters."""

    unknown_field: ClassVar[str] = "unknown parameter of the scenario"
    models: Annotated[tuple[Name, ...], Field(default=())]
    backends: Annotated[tuple[Name, ...], KnownBackends, Field(default=())]

    @model_validator(mode="after")
    def _speculation_in_latency_only(self):
        engine = getattr(self, "engine", None)
        if engine is not None and engine.speculative and self.name != "latency":
            raise refuse("speculative decoding (prompt_lookup_num_tokens, assistant_model) is measured in scenario "
                         "latency: transformers' assisted generation takes one sequence at a time", ("engine",),
                         hint="a server's speculation: scenario served on a server started with it")
        return self

    @property
    def params(self) -> dict:
        """The parameters, defaults filled in, as scenarios and rows take them (settings not given left out)."""
        return self.model_dump(exclude={"name", "models", "backends"}, exclude_none=True)

    @property
    def task_and_version(self) -> tuple[str, int]:
        """The task this scenario runs and its version: speed scenarios run seeded synthetic prompts."""
        reference = self.params.get("task") or self.params.get("prompts", "synthetic")
        if reference == "synthetic":
            return "synthetic", 1
        task = load_task(reference)
        return task.name, task.version


def _task_reference(value: str, info: ValidationInfo) -> str:
    """A shipped task's name as it is; a task file (a path, or a name in the suite's task folders) as its path."""
    context = info.context or {}
    return find_task(value, context.get("base"), context.get("tasks_dirs", ()))


class Latency(ScenarioBase):
    name: Literal["latency"]
    prompt_tokens: PositiveInt = 128
    output_tokens: PositiveInt = 32
    engine: EngineSettings = EngineSettings()
    measure: MeasureSpec | None = None  # the scenario's own policy, instead of the suite's


class Throughput(ScenarioBase):
    name: Literal["throughput"]
    prompt_tokens: PositiveInt = 64
    output_tokens: PositiveInt = 16
    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1, 4, 16]
    engine: EngineSettings = EngineSettings()
    measure: MeasureSpec | None = None  # the scenario's own policy, instead of the suite's


class Quality(ScenarioBase):
    name: Literal["quality"]
    task: Name = "mmlu"
    limit: Count = 0  # 0: the task's own limit
    seed: Count = 1234
    engine: EngineSettings = EngineSettings()

    @field_validator("task")
    @classmethod
    def _task(cls, value: str, info: ValidationInfo) -> str:
        return _task_reference(value, info)


class FindMax(ScenarioBase):
    """Ceilings of the search (the context window bounds max_prompt_tokens too)."""

    name: Literal["find_max"]
    prompt_tokens: PositiveInt = 128
    output_tokens: PositiveInt = 4
    max_batch_size: PositiveInt = 1024
    max_prompt_tokens: PositiveInt = 32768
    engine: EngineSettings = EngineSettings()


class SharedPrefix(Spec):
    """The first `tokens` of a synthetic prompt are the run's one system prompt for a `share` of the requests."""

    tokens: PositiveInt
    share: Annotated[float, Field(ge=0, le=1)] = 1.0


class Conversation(Spec):
    """Multi-turn chat: `users` at once, each sending `turns` in turn, `think_time_s` after each answer."""

    users: PositiveInt
    turns: Annotated[int, Field(strict=True, ge=2)]
    think_time_s: Annotated[float, Field(ge=0)] = 0.0


def _trace_reference(value: str, info: ValidationInfo) -> str:
    """A trace file's path (relative to the suite), or the name of a shipped trace (tasks/traces/NAME.jsonl)."""
    from harness.scenarios.trace import find_trace

    return find_trace(value, (info.context or {}).get("base"))


class Served(ScenarioBase):
    """Served load (an OpenAI-compatible server): prompts "synthetic" (seeded, prompt_tokens long, none sent twice in
    a run; with `shared_prefix`, a system prompt shared by some) or a task's; a sweep over concurrency, or over
    Poisson/gamma arrival rates (req/s) when `rates` is given, or a trace's arrivals replayed (`trace`, sped up by
    `time_scale`); each under every `prefix_cache` setting; with `slo` goodput, and with search_rates [low, high] a
    bisection for the highest rate that meets the SLOs. The server's /metrics is read every metrics_interval_s."""

    name: Literal["served"]
    endpoint: Literal["completions", "chat"] = "completions"
    prompts: Name = "synthetic"
    prompt_tokens: PositiveInt = 128
    output_tokens: PositiveInt = 32
    requests: PositiveInt = 16
    concurrency: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    rates: list[PositiveNumber] = []
    burstiness: PositiveNumber = 1.0
    slo: Slo = Slo()
    search_rates: list[PositiveNumber] = []
    search_steps: PositiveInt = 4
    timeout_s: PositiveNumber = 120.0
    seed: Count = 1234
    prompt_salt: Count | None = None  # None: a new one each run (recorded in the rows)
    shared_prefix: SharedPrefix | None = None
    prefix_cache: Annotated[list[Literal["on", "off"]], Field(min_length=1)] = ["on"]
    metrics_interval_s: PositiveNumber = 1.0
    trace: Name | None = None
    time_scale: PositiveNumber = 1.0
    block_tokens: PositiveInt | None = None  # prompt tokens per hash_id: the trace's (Mooncake's 512)
    conversation: Conversation | None = None
    # More fields of every request's body, as the server takes them: {chat_template_kwargs: {enable_thinking: true}}
    # for a Qwen3 that thinks, a llama.cpp `grammar`. Fields bench sets to measure are refused.
    request_fields: dict | None = None

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: str, info: ValidationInfo) -> str:
        return value if value == "synthetic" else _task_reference(value, info)

    @field_validator("request_fields")
    @classmethod
    def _own_fields(cls, value: dict | None) -> dict | None:
        from harness.backends.openai import MEASURING_FIELDS

        taken = sorted(set(value or ()) & MEASURING_FIELDS)
        if taken:
            raise refuse(f"{taken[0]!r} is set by bench to measure (greedy, streamed, a fixed length)",
                         hint=f"bench sets: {', '.join(sorted(MEASURING_FIELDS))}")
        return value

    @field_validator("prefix_cache", mode="before")
    @classmethod
    def _on_off(cls, value):
        """YAML reads a bare on and off as true and false: they mean the same here."""
        return [{True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v for v in value] \
            if isinstance(value, list) else value

    @field_validator("trace")
    @classmethod
    def _trace(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value and _trace_reference(value, info)

    @model_validator(mode="after")
    def _search(self):
        if self.search_rates and (len(self.search_rates) != 2 or not self.slo.model_dump(exclude_none=True)):
            raise refuse("must be [low, high] req/s, with an `slo` to search for", ("search_rates",))
        if self.shared_prefix and self.shared_prefix.tokens >= self.prompt_tokens:
            raise refuse(f"must be fewer than prompt_tokens ({self.prompt_tokens})", ("shared_prefix", "tokens"))
        for name in ("shared_prefix", "trace", "conversation"):
            if getattr(self, name) and self.prompts != "synthetic":
                raise refuse("needs synthetic prompts", (name,), f"not prompts: {self.prompts}")
        for name, what, clashes in (
                ("trace", "replays the trace's own arrivals and prompts", ("rates", "search_rates", "shared_prefix")),
                ("conversation", "sends each user's turns as their answers end",
                 ("rates", "search_rates", "shared_prefix", "trace"))):
            if getattr(self, name) and any(getattr(self, clash) for clash in clashes):
                raise refuse(f"{what}: no {', '.join(clashes)} with it", (name,))
        if self.conversation and self.endpoint != "chat":
            raise refuse("needs endpoint: chat (each turn sends the conversation so far)", ("conversation",))
        return self


ScenarioSpec = Annotated[Latency | Throughput | Quality | FindMax | Served, Discriminator("name")]

SCENARIO = TypeAdapter(ScenarioSpec)


class ServerSpec(Spec):
    """The OpenAI-compatible server the `openai` backend talks to: {base_url, model_name} of a running one, or
    {launch: transformers|vllm|llama.cpp, python, args} to start one per model on 127.0.0.1
    (harness/backends/server.py; for llama.cpp, `args` are llama-server's, after bench's own settings)."""

    launch: Literal["transformers", "vllm", "llama.cpp"] | None = None
    base_url: Name | None = None
    model_name: Name | None = None
    python: Name | None = None
    args: tuple[Text, ...] = ()
    api_key: Name | None = None
    start_timeout_s: PositiveNumber = 600.0

    @model_validator(mode="after")
    def _one_server(self):
        if (self.launch is None) == (self.base_url is None):
            raise refuse("needs exactly one of `launch` (a server to start) and `base_url`")
        return self


class SuiteSpec(Spec):
    name: Name
    description: Text = ""
    models: Names
    backends: Annotated[Names, KnownBackends] = ("transformers",)
    # Folders of the suite's own task files (relative to the suite file), looked up by name like shipped tasks.
    tasks_dirs: tuple[Name, ...] = ()
    scenarios: Annotated[tuple[ScenarioSpec, ...], Field(min_length=1)]
    device: Literal[DEVICES] = "auto"
    dtype: Literal[DTYPES] = "auto"
    measure: MeasureSpec = MeasureSpec()
    cell_timeout_s: PositiveNumber = 1800.0
    cell_memory_limit_mib: PositiveInt | None = None  # each cell worker's address-space limit; None: no limit
    # A fresh worker (and model load) for every cell, instead of one per model shared by its cells in turn.
    isolate_cells: Setting = False
    report_claims: Setting = False  # write claims.md / claims.csv (verdicts from this run's rows) when done
    # Models added on a given hardware profile (big profiles get big models), by profile name.
    profile_models: dict[str, Names] = {}
    # The only backends a model runs on (a checkpoint only some engines load: an AWQ model on vLLM); others: all.
    model_backends: dict[Name, Annotated[Names, KnownBackends]] = {}
    server: ServerSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _task_folders(cls, data, info: ValidationInfo):
        """The suite's task folders, as paths, for its scenarios' task references (validated after this)."""
        if isinstance(data, dict) and info.context is not None and isinstance(data.get("tasks_dirs"), list):
            base = info.context.get("base") or Path.cwd()
            folders = [str((Path(base) / d).resolve()) for d in data["tasks_dirs"] if isinstance(d, str)]
            for i, folder in enumerate(folders):
                if not Path(folder).is_dir():
                    raise refuse(f"no such folder: {folder}", ("tasks_dirs", i))
            data = {**data, "tasks_dirs": folders}
            info.context["tasks_dirs"] = (*info.context.get("tasks_dirs", ()), *folders)
        return data

    @field_validator("profile_models")
    @classmethod
    def _known_profiles(cls, mapping: dict) -> dict:
        from harness.profiles import profile_names

        for name in mapping:
            if name not in profile_names():
                raise refuse("unknown field", (name,), f"allowed: {', '.join(profile_names())}")
        return mapping

    @model_validator(mode="after")
    def _model_backends(self):
        named = {*self.models, *(m for models in self.profile_models.values() for m in models)}
        for model in self.model_backends:
            if model not in named:
                raise refuse(f"{model!r} is not one of the suite's models (nor of its profile_models)",
                             ("model_backends", model))
        return self

    def runs_on(self, model: str, backend: str) -> bool:
        """Whether `model` runs on `backend` (model_backends restricts a model to some)."""
        return backend in self.model_backends.get(model, (backend,))

    @model_validator(mode="after")
    def _scenario_models(self):
        for i, scenario in enumerate(self.scenarios):
            for j, model in enumerate(scenario.models):
                if model not in self.models:
                    raise refuse(f"{model!r} is not one of the suite's models", ("scenarios", i, "models", j))
        return self

    @property
    def assistant_models(self) -> tuple[str, ...]:
        """The draft models that scenarios' engine settings name (assistant_model): prepared with the suite's own."""
        named = (getattr(s, "engine", None) for s in self.scenarios)
        return tuple(dict.fromkeys(e.assistant_model for e in named if e is not None and e.assistant_model))

    def measure_of(self, scenario: ScenarioBase) -> MeasureSpec:
        """The policy a scenario's figures are measured by: its own where it has one, else the suite's."""
        return getattr(scenario, "measure", None) or self.measure

    def to_data(self) -> dict:
        """The suite as a plain mapping that `suite_from_data` reads back to an equal suite (resolved_config.yaml)."""
        return self.model_dump(exclude_none=True)

    def replace(self, **changes) -> "SuiteSpec":
        """This suite with `changes`, validated as a suite file would be."""
        return suite_from_data({**self.to_data(), **changes}, f"suite {self.name}")


def scenario(name: str, **params) -> ScenarioBase:
    """A scenario spec of `name` with `params`, the rest at their defaults."""
    return validate(SCENARIO, {"name": name, **params}, f"scenario {name}")


def suite_from_data(data, origin: str, line_of=None, options: dict[str, str] | None = None, base: Path | None = None,
                    tasks_dirs: tuple[str, ...] = ()) -> SuiteSpec:
    """A suite from a plain mapping; errors name `origin` (and the line `line_of` gives, or the option `options`
    maps a field to). Task files named by path or in `tasks_dirs` are looked up from `base`."""
    context = {"base": base, "tasks_dirs": tuple(str(Path(d).resolve()) for d in tasks_dirs)}
    return validate(SuiteSpec, data, origin, line_of, options, context)


def override(suite: SuiteSpec, changes: dict, options: dict[str, str], tasks_dirs: tuple[str, ...] = ()) -> SuiteSpec:
    """`suite` with `changes` applied (suite-level fields; `measure` a partial mapping), validated by the same rules
    as a suite file; an invalid value raises ConfigError naming its option (`options` maps each dotted field to one,
    e.g. {"measure.repetitions": "--repetitions", "cell_timeout_s": "--cell-timeout"})."""
    data = suite.to_data()
    if "measure" in changes:
        changes = {**changes, "measure": {**data["measure"], **changes["measure"]}}
    return suite_from_data({**data, **changes}, "command line", options=options, tasks_dirs=tasks_dirs)


def load_suite_file(file: Path, tasks_dirs: tuple[str, ...] = ()) -> SuiteSpec:
    doc = YamlDoc(file)
    return suite_from_data(doc.data, str(doc.file), doc.line, base=doc.file.parent, tasks_dirs=tasks_dirs)


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str, tasks_dirs: tuple[str, ...] = ()) -> SuiteSpec:
    """A suite by name (tasks/suites/NAME.yaml) or by path to a YAML file; `tasks_dirs` add folders of task files."""
    for folder in tasks_dirs:
        if not Path(folder).is_dir():
            raise ConfigError(f"--tasks-dir {folder}: no such folder")
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_suite_file(path, tasks_dirs)
    file = SUITES_DIR / f"{name_or_path}.yaml"
    if not file.exists():
        raise UnknownNameError("suite", name_or_path, suite_names(), hint="or pass a path to a suite YAML file")
    return load_suite_file(file, tasks_dirs)
