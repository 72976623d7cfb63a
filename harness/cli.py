"""The `bench` command, on typer. main(argv) -> exit code is a pure function of its arguments, callable from tests.

Every user error becomes one line on stderr, a hint, and exit code 2; never a traceback. Commands import what they
need (torch, transformers, pandas) when they run, so `bench --help` stays fast.
"""

import functools
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from harness.errors import BenchError, one_line
from harness.hardware import DEVICES, DTYPES


def _examples(*examples: tuple[str, str]) -> str:
    """A command's examples as rich markup: each (command line, what it does)."""
    return "[bold]Examples[/bold]\n\n" + "\n".join(f"[dim]# {what}[/dim]\n{line}" for line, what in examples)


app = typer.Typer(
    name="bench", rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark open-weight language models on this machine: speed, memory, quality.\n\n"
         "Exit codes: 0 done; 1 a cell failed, [bold]compare[/bold] found a regression, or a bug in bench; 2 a usage "
         "error (one line and a hint).",
    epilog=_examples(("bench run", "the quick suite on the embedded default model, on this machine's device"),
                     ("bench models list", "known model aliases and whether they are prepared"),
                     ("bench profiles detect", "which hardware profile matches this machine, and why"),
                     ("bench compare results/last-night results/tonight", "changes with 95% intervals"),
                     ("bench run --help", "each command's own options and examples")),
)
models_app = typer.Typer(help="List or prepare models.")
profiles_app = typer.Typer(help="Hardware profiles: list them, show one, detect this machine's.")
leaderboard_app = typer.Typer(help="Leaderboard CSVs (one per profile) and an HTML page.")
app.add_typer(models_app, name="models")
app.add_typer(profiles_app, name="profiles")
app.add_typer(leaderboard_app, name="leaderboard")


@app.callback(invoke_without_command=True)
def _program(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:  # plain `bench`: its help
        typer.echo(ctx.get_help(), nl=False)
        raise typer.Exit(0)


def _command(group: typer.Typer, name: str, help: str, *examples: tuple[str, str]):
    """Registers a command whose function returns its exit code; errors it raises end as one line (see _guarded)."""
    def register(func):
        group.command(name, help=help, epilog=_examples(*examples))(_guarded(func))
        return func
    return register


def _guarded(func):
    """`func`, its errors as exit codes: a BenchError one line, a hint and its exit_code; a bug one line, exit 1."""
    @functools.wraps(func)
    def guarded(**options) -> int:
        try:
            return func(**options)
        except BenchError as exc:
            print(f"bench: error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
            return exc.exit_code
        except BrokenPipeError:  # the reader (e.g. `| head`) went away: nothing left to say
            sys.stdout = None
            return 0
        except KeyboardInterrupt:
            print("bench: interrupted; rows measured so far are in the run folder's rows.jsonl", file=sys.stderr)
            return 130
        except Exception as exc:  # not the user's doing: a bug in bench. One line here, the traceback in a file.
            print(f"bench: internal error (a bug in bench): {one_line(exc)}", file=sys.stderr)
            print(f"hint: the traceback is in {_write_traceback(exc)}; please report it with the command you ran",
                  file=sys.stderr)
            return 1
    return guarded


# Options more than one command takes (run's --device and --dtype default to the suite's).
DEVICE_HELP, DTYPE_HELP = "device; auto: cuda, else mps, else cpu", "dtype; auto: what suits the device"
Device = Annotated[Literal[DEVICES], typer.Option(help=DEVICE_HELP)]
Dtype = Annotated[Literal[DTYPES], typer.Option(help=DTYPE_HELP)]
SuiteDevice = Annotated[Literal[DEVICES] | None, typer.Option(help=DEVICE_HELP, show_default="the suite's")]
SuiteDtype = Annotated[Literal[DTYPES] | None, typer.Option(help=DTYPE_HELP, show_default="the suite's")]
Online = Annotated[bool, typer.Option("--online", help="allow the Hugging Face hub (default: offline)")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="no progress bars")]
RunOut = Annotated[str | None, typer.Option("--out", metavar="DIR", help="run folder",
                                            show_default="results/<run-id>")]

# `bench run`'s suite options: the suite field each sets (--find-max sets the scenarios).
SUITE_FIELDS = {"model": "models", "backend": "backends", "device": "device", "dtype": "dtype",
                "repetitions": "measure.repetitions", "warmup": "measure.warmup", "min_seconds": "measure.min_seconds",
                "target_ci": "measure.target_ci", "max_seconds": "measure.max_seconds",
                "cell_timeout": "cell_timeout_s", "memory_limit": "cell_memory_limit_mib",
                "isolate_cells": "isolate_cells", "find_max": "scenarios"}
# What --resume takes from the run folder instead (its suite, as resolved when it started).
SUITE_OPTIONS = ("suite", "profile", "force", *SUITE_FIELDS, "tasks_dir", "out")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(ctx: typer.Context, names) -> list[str]:
    """The options of `names` given on the command line (not left at their defaults), in that order."""
    return [name for name in names if ctx.get_parameter_source(name).name != "DEFAULT"]


def _suite_from_options(ctx: typer.Context):
    """The suite --suite names, with the suite options given; the suite's validation checks them all."""
    from harness.config import load_suite, override

    changes, measure = {}, {}
    for name in _given(ctx, SUITE_FIELDS):
        field, value = SUITE_FIELDS[name], ctx.params[name]
        if field.startswith("measure."):
            measure[field.removeprefix("measure.")] = value
        elif name == "find_max":  # a flag: given, it is set
            changes[field] = [{"name": "find_max"}]
        else:
            changes[field] = value
    if measure:
        changes["measure"] = measure
    folders = tuple(ctx.params["tasks_dir"] or ())
    return override(load_suite(ctx.params["suite"], folders), changes, {f: _option(n) for n, f in SUITE_FIELDS.items()},
                    folders)


@_command(app, "run", "Run a suite and write [bold]rows.jsonl[/bold], [bold]summary.csv[/bold] and a table.",
          ("bench run", "the quick suite on the embedded default model, on this machine's device"),
          ("bench run --model tiny-dense --out /tmp/r", "the quick suite on a tiny random-weight model"),
          ("bench run --suite my_suite.yaml --device cpu --dtype fp32 --repetitions 10", "a suite file, overridden"),
          ("bench run --target-ci 0.02 --max-seconds 120", "repeat each figure until it is known to +-2%"),
          ("bench run --profile rtx4090", "refused unless this machine is an RTX 4090 (--force runs it anyway)"),
          ("bench run --resume results/RUN_ID", "finish an interrupted run (cells not complete run again)"),
          ("bench run --find-max --model tiny-dense", "largest batch size and prompt length that fit this device"))
def _cmd_run(
    ctx: typer.Context,
    suite: Annotated[str, typer.Option(
        metavar="NAME|FILE", help="suite name (tasks/suites/NAME.yaml) or a YAML file's path")] = "quick",
    profile: Annotated[str | None, typer.Option(metavar="NAME", help="hardware profile (hardware_profiles/NAME.yaml)",
                                                show_default="the one detected")] = None,
    force: Annotated[bool, typer.Option("--force", help="run even where the machine does not match --profile")] = False,
    model: Annotated[list[str] | None, typer.Option(
        metavar="M", help="model alias, local folder or Hugging Face id (repeatable)")] = None,
    backend: Annotated[list[str] | None, typer.Option(metavar="B", help="backend name (repeatable)")] = None,
    device: SuiteDevice = None,
    dtype: SuiteDtype = None,
    repetitions: Annotated[int | None, typer.Option(metavar="N", help="timed repetitions per figure")] = None,
    warmup: Annotated[int | None, typer.Option(metavar="N", help="untimed warm-up runs")] = None,
    min_seconds: Annotated[float | None, typer.Option(
        metavar="T", help="keep repeating until T seconds have passed")] = None,
    target_ci: Annotated[float | None, typer.Option(
        metavar="F", help="repeat until the 95% interval of each speed figure's median is within +-F of it (0.02: "
                          "+-2%), instead of a fixed count")] = None,
    max_seconds: Annotated[float | None, typer.Option(
        metavar="T", help="with --target-ci: stop after T seconds; the figure then says it did not converge")] = None,
    cell_timeout: Annotated[float | None, typer.Option(metavar="S", help="seconds before a cell is killed")] = None,
    out: RunOut = None,
    online: Online = False,
    no_progress: NoProgress = False,
    resume: Annotated[str | None, typer.Option(metavar="RUN_DIR", help="finish an interrupted run: rerun the "
                                               "cells it did not complete, with its suite (no suite options)")] = None,
    memory_limit: Annotated[int | None, typer.Option(metavar="MIB", help="address-space limit of each cell's "
                                                     "worker: past it the cell fails as out of memory")] = None,
    isolate_cells: Annotated[bool, typer.Option("--isolate-cells", help="load the model afresh in a new worker for "
                                                "every cell (default: a model's cells share one worker)")] = False,
    find_max: Annotated[bool, typer.Option("--find-max", help="instead of the suite's scenarios, find the largest "
                                           "batch size and prompt length that fit")] = False,
    tasks_dir: Annotated[list[str] | None, typer.Option(
        metavar="DIR", help="a folder of your own task files, named in the suite like shipped tasks and looked up "
                            "before them (repeatable)")] = None,
    trust_remote_code: Annotated[list[str] | None, typer.Option(metavar="M", help="let model M run the Python code "
                                                                "it ships (repeatable; off for every other)")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="load weights in pickle formats (.bin, .pt, "
                                               ".pth), which can run code (default: refused)")] = False,
) -> int:
    from harness.errors import ConfigError
    from harness.results.tables import run_report
    from harness.runner import resume_run, start_run

    trust = {"online": online, "progress": not no_progress, "trust_remote_code": tuple(trust_remote_code or ()),
             "allow_pickle": allow_pickle}
    if resume is not None:
        given = _given(ctx, SUITE_OPTIONS)
        if given:
            raise ConfigError(f"--resume takes the suite from the run folder; {_option(given[0])} cannot change it",
                              hint=f"bench run --resume {resume}")
        result = resume_run(Path(resume), **trust)
    else:
        result = start_run(_suite_from_options(ctx), out_dir=out, profile=profile, force=force, **trust)
    print(run_report(result))
    return 1 if result.failed else 0


@_command(models_app, "list", "Known model aliases and whether each is prepared.", ("bench models list", "the zoo"))
def _cmd_models_list() -> int:
    from harness import zoo
    from harness.results.console import table

    print(table(["model", "state", "license", "description"],
                [[e["alias"], "prepared" if e["prepared"] else "not prepared", e["license"], e["description"]]
                 for e in zoo.list_models()]))
    return 0


@_command(models_app, "pull", "Fetch and convert a model now (a run does it on first use).",
          ("bench models pull gemma3-270m", "prepare an alias ahead of time"),
          ("bench models pull HuggingFaceTB/SmolLM2-360M --online", "a Hugging Face id, downloaded"))
def _cmd_models_pull(
    name: Annotated[str, typer.Argument(metavar="NAME", help="model alias, local folder or Hugging Face id")],
    online: Online = False,
) -> int:
    from harness import zoo

    model = zoo.pull(name, online=online)
    print(f"{name}: {model.path} ({model.source}, revision {model.revision[:12]})")
    return 0


@_command(app, "suites", "List the suites (tasks/suites/).", ("bench suites", "each suite and what it runs"))
def _cmd_suites() -> int:
    from harness.config import load_suite, suite_names
    from harness.results.console import table

    print(table(["suite", "description"], [[name, load_suite(name).description] for name in suite_names()]))
    return 0


@_command(profiles_app, "list", "Every profile, with its memory, bandwidth, peak and price.",
          ("bench profiles list", "the targets"))
def _cmd_profiles_list() -> int:
    from harness import profiles
    from harness.results.console import table

    numbers = ("memory_GB", "bandwidth_GB/s", "bf16_TFLOP/s", "$/h")
    rows = []
    for name in profiles.profile_names():
        p = profiles.get_profile(name)
        figures = [_number(v) for v in (p.memory_gb, p.memory_bandwidth_gbps, p.bf16_tflops, p.price_usd_per_hour)]
        rows.append([p.name, p.kind, *figures, p.description])
    print(table(["profile", "kind", *numbers, "description"], rows, right=numbers))
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@_command(profiles_app, "show", "One profile's figures and their sources.",
          ("bench profiles show h100-sxm", "the profile file, as written"))
def _cmd_profiles_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="profile name (hardware_profiles/NAME.yaml)")],
) -> int:
    from harness import profiles

    print(Path(profiles.get_profile(name).file).read_text().rstrip())
    return 0


@_command(profiles_app, "detect", "Which profile matches this machine, and why.",
          ("bench profiles detect", "this machine's best device"), ("bench profiles detect --device cpu", "its CPU"))
def _cmd_profiles_detect(device: Device = "auto") -> int:
    from harness import profiles
    from harness.hardware import detect_device, device_name, memory_gb

    device = detect_device(device)
    found, reason = profiles.detect(device, device_name(device), memory_gb(device))
    print(f"{found.name if found else 'none'}: {reason}")
    return 0


@_command(app, "calibrate", "Measure this device's memory bandwidth and matmul FLOP/s afresh (cached for runs).",
          ("bench calibrate", "this machine's best device and dtype"),
          ("bench calibrate --device cpu --dtype fp32", "a chosen pair"),
          ("bench calibrate --stability", "also how far its speed drifts over 3 minutes: timed intervals widen by it"))
def _cmd_calibrate(device: Device = "auto", dtype: Dtype = "auto", stability: Annotated[bool, typer.Option(
        help="also measure how far this machine's speed drifts (cached; runs widen every timed figure's interval by "
             "it, so that it holds the machine's long-run median)")] = False,
                   stability_seconds: Annotated[float, typer.Option(
                       help="how long the stability measurement runs, at least 40 s")] = 180.0) -> int:
    from harness.errors import ConfigError
    from harness.hardware import auto_dtype, detect_device
    from harness.measure.calibration import (
        STABILITY_BLOCK_SECONDS,
        STABILITY_MIN_BLOCKS,
        calibrate,
        calibrate_stability,
    )

    if stability and not STABILITY_MIN_BLOCKS * STABILITY_BLOCK_SECONDS <= stability_seconds < math.inf:
        raise ConfigError(f"--stability-seconds: must be a finite number of seconds, at least "
                          f"{STABILITY_MIN_BLOCKS * STABILITY_BLOCK_SECONDS:g} ({STABILITY_MIN_BLOCKS} blocks), not "
                          f"{stability_seconds:g}")
    device = detect_device(device)
    dtype = auto_dtype(device) if dtype == "auto" else dtype
    result, _ = calibrate(device, dtype, fresh=True)
    for label, stats, unit in (("copy bandwidth (read + write)", result.bandwidth_stats, "GB/s"),
                               (f"{dtype} matmul n={result.matmul_n}", result.matmul_stats, "TFLOP/s")):
        print(f"{label:<32} median {stats['median']:.4g} {unit}  p10 {stats['p10']:.4g}  p90 {stats['p90']:.4g}  "
              f"cv {stats['cv']:.3f}  n {stats['n']}")
    if stability:
        found = calibrate_stability(device, stability_seconds)
        print(f"{'stability':<32} {found.blocks} blocks of {found.block_seconds:g} s (matmul n={found.matmul_n}); 95% "
              f"within [{found.block_ratio_low:.3f}, {found.block_ratio_high:.3f}] of their median: drift factor "
              f"{found.drift_factor:.3f}")
    print(f"device {device} ({result.device_name}); cached for later runs")
    return 0


@_command(app, "claims", "Verdicts on the public claims from a run's rows (writes claims.md and claims.csv).",
          ("bench claims", "the newest run under results/"), ("bench claims results/RUN_ID", "a given run"))
def _cmd_claims(run_dir: Annotated[str | None, typer.Argument(
        metavar="RUN_DIR", help="a run folder", show_default="the newest under results/")] = None) -> int:
    from harness import claims
    from harness.errors import ConfigError
    from harness.results.merge import load

    if run_dir:
        folder = Path(run_dir)
    else:
        runs = sorted(p.parent for p in Path("results").glob("*/rows.jsonl"))
        if not runs:
            raise ConfigError("no run folder under results/", hint="bench run --suite claims, or name a run folder")
        folder = runs[-1]
    if not (folder / "rows.jsonl").exists():
        raise ConfigError(f"{folder} is not a run folder: it has no rows.jsonl")
    rows, _ = load([str(folder)])  # rows of any schema version this bench reads, in the current layout
    print(claims.write_report(folder, claims.verdicts(rows)))
    print(f"\nwritten: {folder / 'claims.md'}, {folder / 'claims.csv'}")
    return 0


@_command(app, "overhead", "Harness overhead: bench's decode tok/s over a bare greedy loop's (their ratio).",
          ("bench overhead", "SmolLM2-135M, 8 interleaved pairs"),
          ("bench overhead --model tiny-dense --device cpu --rounds 16", "another model, more pairs"))
def _cmd_overhead(
    model: Annotated[str, typer.Option(help="model alias, local folder or Hugging Face id")] = "smollm2-135m",
    device: Device = "auto",
    dtype: Dtype = "auto",
    prompt_tokens: Annotated[int, typer.Option(metavar="P", help="prompt length in tokens")] = 64,
    output_tokens: Annotated[int, typer.Option(metavar="N", help="tokens decoded per round")] = 64,
    rounds: Annotated[int, typer.Option(help="A B pairs (bench, bare loop), interleaved")] = 8,
) -> int:
    from harness.overhead import measure_overhead

    print(measure_overhead(model, device, dtype, prompt_tokens, output_tokens, rounds).describe())
    return 0


# serve-bench's options that set a field of its suite, by the field's dotted path (for the suite's errors).
SERVE_OPTIONS = {f"scenarios.0.{field}": f"--{option}" for field, option in (
    ("endpoint", "endpoint"), ("prompts", "prompts"), ("prompt_tokens", "prompt-tokens"),
    ("output_tokens", "output-tokens"), ("requests", "requests"), ("concurrency", "concurrency"), ("rates", "rate"),
    ("burstiness", "burstiness"), ("slo.ttft_ms", "slo-ttft-ms"), ("slo.tpot_ms", "slo-tpot-ms"),
    ("slo.e2e_latency_ms", "slo-e2e-ms"), ("slo.percentile", "slo-percentile"), ("search_rates", "search-rates"),
    ("timeout_s", "timeout"), ("seed", "seed"), ("prompt_salt", "prompt-salt"),
    ("shared_prefix.tokens", "shared-prefix-tokens"), ("shared_prefix.share", "shared-prefix-share"),
    ("prefix_cache", "prefix-cache"), ("trace", "trace"), ("time_scale", "time-scale"),
    ("block_tokens", "block-tokens"), ("metrics_interval_s", "metrics-interval"), ("conversation", "users"),
    ("conversation.users", "users"),
    ("conversation.turns", "turns"), ("conversation.think_time_s", "think-time"),
    ("request_fields", "request-fields"))} | {
    "measure.warmup": "--warmup", "server.base_url": "--base-url", "server.model_name": "--model"}


@_command(app, "serve-bench", "Served load against a running OpenAI-compatible server: TTFT, TPOT, goodput.",
          ("bench serve-bench --base-url http://127.0.0.1:8000 --model M --tokenizer smollm2-135m --concurrency 1 "
           "--concurrency 8", "a concurrency sweep"),
          ("bench serve-bench --base-url URL --model M --rate 1 --rate 4 --burstiness 0.5 --endpoint chat",
           "Poisson-like arrivals at two rates, burstier than Poisson"),
          ("bench serve-bench --base-url URL --model M --slo-ttft-ms 500 --slo-tpot-ms 50 --search-rates 0.5 16",
           "the highest rate that meets the SLOs"),
          ("bench serve-bench --base-url URL --model M --prompts mmlu", "a quality task's prompts"),
          ("bench serve-bench --base-url URL --model M --prompt-tokens 256 --shared-prefix-tokens 192 "
           "--prefix-cache on --prefix-cache off", "a shared system prompt, prefix cache on and off"),
          ("bench serve-bench --base-url URL --model M --trace mooncake_sample --time-scale 2",
           "the shipped trace's arrivals, twice as fast"),
          ("bench serve-bench --base-url URL --model M --endpoint chat --users 4 --turns 5 --think-time 1",
           "multi-turn chat: 4 users, 5 turns each, 1 s between an answer and the next turn"))
def _cmd_serve_bench(
    ctx: typer.Context,
    base_url: Annotated[str, typer.Option(help="the server, e.g. http://127.0.0.1:8000")],
    model: Annotated[str, typer.Option(help="the model's name on the server")],
    tokenizer: Annotated[str | None, typer.Option(help="alias or folder whose tokenizer counts tokens",
                                                  show_default="--model")] = None,
    endpoint: Annotated[Literal["completions", "chat"], typer.Option(help="the OpenAI API to call")] = "completions",
    prompts: Annotated[str, typer.Option(help="synthetic, or a quality task whose prompts to send")] = "synthetic",
    prompt_tokens: Annotated[int, typer.Option(metavar="P", help="synthetic prompt length in tokens")] = 128,
    output_tokens: Annotated[int, typer.Option(metavar="N", help="tokens each request asks for")] = 32,
    requests: Annotated[int, typer.Option(metavar="N", help="requests per load point")] = 16,
    concurrency: Annotated[list[int] | None, typer.Option(
        metavar="C", help="requests in flight (repeat to sweep)", show_default="1")] = None,
    rate: Annotated[list[float] | None, typer.Option(metavar="R", help="arrivals per second instead of a fixed "
                                                     "concurrency (repeat to sweep)")] = None,
    burstiness: Annotated[float, typer.Option(help="gamma shape of the gaps between arrivals; 1: Poisson")] = 1.0,
    slo_ttft_ms: Annotated[float | None, typer.Option(metavar="MS", help="SLO: time to first token")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(metavar="MS", help="SLO: time per output token")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option(metavar="MS", help="SLO: end-to-end latency")] = None,
    slo_percentile: Annotated[float | None, typer.Option(metavar="Q", help="percentile the SLOs hold at",
                                                         show_default="90")] = None,
    search_rates: Annotated[tuple[float, float] | None, typer.Option(
        metavar="LOW HIGH", help="bisect for the highest rate that meets the SLOs")] = None,
    timeout: Annotated[float, typer.Option(metavar="S", help="per-request timeout in seconds")] = 120.0,
    seed: Annotated[int, typer.Option(help="seed of the prompts and the arrival gaps")] = 1234,
    prompt_salt: Annotated[int | None, typer.Option(metavar="N", help="send a run's prompts again (its rows' "
                                                    "prompt_salt)", show_default="new each run")] = None,
    shared_prefix_tokens: Annotated[int | None, typer.Option(metavar="S", help="a system prompt of S tokens "
                                                             "shared by requests")] = None,
    shared_prefix_share: Annotated[float | None, typer.Option(metavar="R", help="share of requests with it",
                                                              show_default="1")] = None,
    prefix_cache: Annotated[list[str] | None, typer.Option(metavar="on|off", help="the server's prefix cache "
                                                           "(repeat to sweep)", show_default="on")] = None,
    trace: Annotated[str | None, typer.Option(metavar="FILE|NAME", help="replay a Mooncake-style JSONL trace "
                                              "(or a shipped one: mooncake_sample)")] = None,
    time_scale: Annotated[float, typer.Option(metavar="K", help="replay the trace K times as fast")] = 1.0,
    block_tokens: Annotated[int | None, typer.Option(metavar="B", help="tokens per hash_id of the trace",
                                                     show_default="the trace's: 512")] = None,
    metrics_interval: Annotated[float, typer.Option(metavar="S", help="seconds between reads of the server's "
                                                    "/metrics")] = 1.0,
    users: Annotated[int | None, typer.Option(metavar="N", help="multi-turn chat: users at once")] = None,
    turns: Annotated[int, typer.Option(metavar="K", help="multi-turn chat: turns per user")] = 3,
    think_time: Annotated[float, typer.Option(metavar="S", help="multi-turn chat: seconds between an answer and "
                                              "the next turn")] = 0.0,
    request_fields: Annotated[str | None, typer.Option(
        metavar="JSON", help="more fields of every request, e.g. "
        "'{\"chat_template_kwargs\": {\"enable_thinking\": true}}'")] = None,
    warmup: Annotated[int, typer.Option(metavar="N", help="untimed requests first")] = 1,
    out: RunOut = None,
    no_progress: NoProgress = False,
) -> int:
    from harness.results.tables import run_report
    from harness.runner import start_run

    result = start_run(_served_suite(ctx.params), out_dir=out, progress=not no_progress)
    print(run_report(result))
    return 1 if result.failed else 0


def _served_suite(given: dict):
    """serve-bench's suite: one `served` scenario for the `openai` backend, run like any other, so that the suite's
    validation checks the values (an invalid one named by its option) and the rows land as any run's do."""
    from harness.config import suite_from_data

    slo = {key: given[name] for key, name in (("ttft_ms", "slo_ttft_ms"), ("tpot_ms", "slo_tpot_ms"),
                                              ("e2e_latency_ms", "slo_e2e_ms"), ("percentile", "slo_percentile"))
           if given[name] is not None}
    scenario = {"name": "served", **{key: given[key] for key in ("endpoint", "prompts", "prompt_tokens",
                                                                 "output_tokens", "requests", "burstiness", "seed",
                                                                 "time_scale")},
                "concurrency": list(given["concurrency"] or [1]), "rates": list(given["rate"] or []), "slo": slo,
                "search_rates": list(given["search_rates"] or []), "timeout_s": given["timeout"],
                "prefix_cache": list(given["prefix_cache"] or ["on"]), "metrics_interval_s": given["metrics_interval"],
                **{key: given[key] for key in ("prompt_salt", "trace", "block_tokens") if given[key] is not None}}
    if shared := _shared_prefix(given["shared_prefix_tokens"], given["shared_prefix_share"]):
        scenario["shared_prefix"] = shared
    if given["users"] is not None:
        scenario["conversation"] = {"users": given["users"], "turns": given["turns"],
                                    "think_time_s": given["think_time"]}
    if given["request_fields"] is not None:
        scenario["request_fields"] = _json_object("--request-fields", given["request_fields"])
    suite = {"name": "serve-bench", "description": f"served load against {given['base_url']}",
             "models": [given["tokenizer"] or given["model"]], "backends": ["openai"], "scenarios": [scenario],
             "measure": {"warmup": given["warmup"]},
             "server": {"base_url": given["base_url"], "model_name": given["model"]}}
    options = {**SERVE_OPTIONS, "models": "--tokenizer" if given["tokenizer"] else "--model"}
    return suite_from_data(suite, origin="serve-bench", options=options)


def _json_object(option: str, text: str) -> dict:
    from harness.errors import ConfigError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: must be a JSON object of request fields, got {text}")
    return value


def _shared_prefix(tokens: int | None, share: float | None) -> dict | None:
    from harness.errors import ConfigError

    if tokens is None and share is not None:
        raise ConfigError("--shared-prefix-share: needs --shared-prefix-tokens (the shared system prompt's length)")
    return None if tokens is None else {"tokens": tokens, **({"share": share} if share is not None else {})}


@_command(app, "merge", "Rows of many run folders as one table: rows and summary, as CSV and Parquet.",
          ("bench merge results/ /mnt/other/ --out merged/", "every run under two folders"))
def _cmd_merge(
    dirs: Annotated[list[str], typer.Argument(metavar="DIR...", help="run folders, folders of run folders, "
                                              "rows.jsonl files")],
    out: Annotated[str, typer.Option(metavar="DIR", help="folder for the merged tables")],
) -> int:
    from harness.results import merge

    loaded = merge.load_table(dirs)
    written = merge.write_tables(Path(out), loaded)
    print(f"{loaded.table.num_rows} rows from {len(loaded.folders)} runs ({loaded.duplicates} exact duplicates "
          f"dropped); written: {', '.join(str(p) for p in written)}")
    return 0


@_command(app, "compare", "Pair the comparable figures of two runs: change, 95% interval, verdict. Exits 1 when "
          "a figure regresses beyond --threshold.",
          ("bench compare results/last-night results/tonight", "exit 1 on a regression"),
          ("bench compare fp32-run bf16-run --ignore dtype", "pair across a deliberately changed setting"),
          ("bench compare base/ new/ --threshold 5", "a stricter threshold"))
def _cmd_compare(
    base: Annotated[str, typer.Argument(metavar="BASE", help="run folder (or folder of runs) to compare against")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="run folder (or folder of runs) to judge")],
    threshold: Annotated[float, typer.Option(metavar="PCT", help="a worse change beyond its noise and beyond PCT "
                                             "percent is a regression")] = 10.0,
    ignore: Annotated[list[str] | None, typer.Option(metavar="FIELD", help="pair rows whose keys differ in FIELD, "
                                                     "e.g. dtype (repeatable; reported first)")] = None,
) -> int:
    import math

    from harness.errors import ConfigError
    from harness.results import compare, merge

    if not 0 <= threshold < math.inf:
        raise ConfigError(f"--threshold must be a number of percent >= 0, got {threshold:g}")
    fields = compare.check_ignore(ignore or [])
    changes, unpaired = compare.compare(merge.load([base])[0], merge.load([new])[0], threshold / 100, fields)
    print(compare.report(changes, unpaired, fields, threshold / 100))
    if not changes:
        raise ConfigError("no comparable figures: BASE and NEW share no comparability key",
                          hint="--ignore FIELD pairs rows across a setting that differs (named above)")
    return 1 if any(c.regressed for c in changes) else 0


@_command(leaderboard_app, "build", "Build the leaderboard from run folders.",
          ("bench leaderboard build results/* --out results/leaderboard/", "every run under results/"))
def _cmd_leaderboard_build(
    dirs: Annotated[list[str], typer.Argument(metavar="RUN_DIR...", help="run folders or folders of run folders")],
    out: Annotated[str, typer.Option(metavar="DIR", help="folder for the CSVs and the page")] = "results/leaderboard",
) -> int:
    from harness.results import leaderboard, merge

    written = leaderboard.build(merge.load_table(dirs), Path(out))
    print(f"written: {', '.join(str(p) for p in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs `bench` on `argv` (default: the process's arguments); returns the exit code."""
    try:
        return typer.main.get_command(app).main(args=argv, prog_name="bench", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error (typer's click): one line, and where to look
        print(f"bench: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        ctx = getattr(exc, "ctx", None)
        actions = getattr(ctx.command, "commands", None) if ctx else None
        print(f"hint: {ctx.command_path} takes one of: {', '.join(actions)}" if actions
              else f"hint: see {ctx.command_path if ctx else 'bench'} --help", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # typer's --install-completion and --show-completion exit by themselves
        return exc.code if isinstance(exc.code, int) else 0


def _write_traceback(exc: Exception) -> Path:
    """The traceback of `exc` in the bench cache's crashes/ folder, a file per crash; returns its path."""
    import datetime
    import os
    import traceback

    from harness.zoo import cache_dir

    folder = cache_dir() / "crashes"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}-{os.getpid()}.txt"
    path.write_text(f"bench {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc)),
                    encoding="utf-8")
    return path

