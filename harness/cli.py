"""The `bench` command. main(argv) -> exit code is a pure function of its arguments, callable from tests.

Every user error becomes one line on stderr, a hint, and exit code 2; never a traceback.
"""

import argparse
import math
import sys
from pathlib import Path

from harness.errors import BenchError, one_line

EXAMPLES = """examples:
  bench run                                  quick suite on the embedded default model, this machine's device
  bench run --model tiny-dense --out /tmp/r  the quick suite on a tiny random-weight model
  bench run --suite my_suite.yaml --device cpu --dtype fp32
  bench models list                          known model aliases and whether they are prepared
  bench models pull gemma3-270m              fetch and convert a model ahead of time
  bench overhead                             bench's decode tok/s against a bare greedy loop (ratio)
  bench profiles detect                      which hardware profile matches this machine, and why
  bench run --profile rtx4090                refuses unless this machine is an RTX 4090 (--force overrides)
  bench calibrate                            measure memory bandwidth and matmul FLOP/s
  bench run --resume results/RUN_ID          finish an interrupted run (cells not complete run again)
  bench run --find-max --model tiny-dense    largest batch size and prompt length that fit this device
  bench merge results/ /mnt/other/ --out merged/          rows of many runs as one table (CSV, Parquet)
  bench compare results/last-night results/tonight        changes with 95% intervals; exit 1 on a regression
  bench compare fp32-run bf16-run --ignore dtype          pair across a deliberately changed setting
  bench leaderboard build results/* --out results/leaderboard/
"""


SERVE_EXAMPLES = """examples:
  bench serve-bench --base-url http://127.0.0.1:8000 --model M --tokenizer smollm2-135m --concurrency 1 --concurrency 8
  bench serve-bench --base-url URL --model M --rate 1 --rate 4 --burstiness 0.5 --endpoint chat
  bench serve-bench --base-url URL --model M --slo-ttft-ms 500 --slo-tpot-ms 50 --search-rates 0.5 16
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark open-weight language models on this machine: speed, memory, quality.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite and write rows.jsonl, summary.csv and a table",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    run.add_argument("--suite", default="quick", help="suite name (tasks/suites/NAME.yaml) or YAML path [quick]")
    run.add_argument("--profile", help="hardware profile (hardware_profiles/NAME.yaml) [the one detected]")
    run.add_argument("--force", action="store_true", help="run even where the machine does not match --profile")
    run.add_argument("--model", action="append", metavar="M", help="model alias, local folder or HF id (repeatable)")
    run.add_argument("--backend", action="append", metavar="B", help="backend name (repeatable)")
    run.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="device [suite's, usually auto]")
    run.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], help="dtype [suite's, usually auto]")
    run.add_argument("--repetitions", type=int, metavar="N", help="timed repetitions per figure (>= 1)")
    run.add_argument("--warmup", type=int, metavar="N", help="untimed warm-up runs (>= 0)")
    run.add_argument("--min-seconds", type=float, metavar="T", help="keep repeating until T seconds have passed")
    run.add_argument("--cell-timeout", type=float, metavar="S", help="seconds before a cell is killed")
    run.add_argument("--out", metavar="DIR", help="run folder [results/<run-id>]")
    run.add_argument("--online", action="store_true", help="allow the Hugging Face hub (default: offline)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run: rerun the cells it did not "
                                                         "complete, with its suite (no suite options with it)")
    run.add_argument("--memory-limit", type=int, metavar="MIB",
                     help="address-space limit of each cell's worker: past it the cell fails as out of memory")
    run.add_argument("--find-max", action="store_true",
                     help="instead of the suite's scenarios, find the largest batch size and prompt length that fit")
    run.add_argument("--trust-remote-code", action="append", metavar="M", default=[],
                     help="let model M run the Python code it ships (repeatable; off for every other model)")
    run.add_argument("--allow-pickle", action="store_true",
                     help="load weights in pickle formats (.bin, .pt, .pth), which can run code (default: refused)")

    models = sub.add_parser("models", help="list or prepare models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.add_parser("list", help="known aliases and whether each is prepared")
    pull = models_sub.add_parser("pull", help="fetch and convert a model now")
    pull.add_argument("name")
    pull.add_argument("--online", action="store_true", help="allow the Hugging Face hub")

    sub.add_parser("suites", help="list the suites")

    claims = sub.add_parser("claims", help="verdicts on the public claims from a run's rows (claims.md, claims.csv)")
    claims.add_argument("run_dir", nargs="?", help="a run folder [the newest under results/]")

    profiles = sub.add_parser("profiles", help="hardware profiles: list, show one, detect this machine's")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", metavar="ACTION")
    profiles_sub.add_parser("list", help="every profile, with its bandwidth, peak and price")
    show = profiles_sub.add_parser("show", help="one profile's figures and their sources")
    show.add_argument("name")
    detect = profiles_sub.add_parser("detect", help="which profile matches this machine, and why")
    detect.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])

    calibrate = sub.add_parser("calibrate", help="measure this device's memory bandwidth and matmul FLOP/s (cached)")
    calibrate.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    calibrate.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])

    merge = sub.add_parser("merge", help="rows of many run folders as one table: rows and summary, CSV and Parquet")
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, folders of run folders, rows.jsonl files")
    merge.add_argument("--out", required=True, metavar="DIR", help="folder for the merged tables")

    compare = sub.add_parser("compare", help="pair comparable figures of two runs: change, 95%% interval, verdict; "
                                             "exit 1 when a figure regresses beyond --threshold")
    compare.add_argument("base", metavar="BASE", help="run folder (or folder of runs) to compare against")
    compare.add_argument("new", metavar="NEW", help="run folder (or folder of runs) to judge")
    compare.add_argument("--threshold", type=float, default=10.0, metavar="PCT",
                         help="a worse change beyond its noise and beyond PCT percent is a regression [10]")
    compare.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                         help="pair rows whose keys differ in FIELD, e.g. dtype (repeatable; reported first)")

    leaderboard = sub.add_parser("leaderboard", help="leaderboard CSVs (one per profile) and an HTML page")
    leaderboard_sub = leaderboard.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    build = leaderboard_sub.add_parser("build", help="build from run folders")
    build.add_argument("dirs", nargs="+", metavar="RUN_DIR", help="run folders or folders of run folders")
    build.add_argument("--out", default="results/leaderboard", metavar="DIR", help="[results/leaderboard]")

    serve = sub.add_parser("serve-bench", help="served load against a running OpenAI-compatible server",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVE_EXAMPLES)
    serve.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    serve.add_argument("--model", required=True, help="the model's name on the server")
    serve.add_argument("--tokenizer", help="alias or folder whose tokenizer counts tokens [--model]")
    serve.add_argument("--endpoint", default="completions", choices=["completions", "chat"])
    serve.add_argument("--prompts", default="synthetic", help="synthetic, or a quality task's prompts [synthetic]")
    serve.add_argument("--prompt-tokens", type=int, default=128, metavar="P", help="synthetic prompt length [128]")
    serve.add_argument("--output-tokens", type=int, default=32, metavar="N", help="[32]")
    serve.add_argument("--requests", type=int, default=16, metavar="N", help="requests per load point [16]")
    serve.add_argument("--concurrency", type=int, action="append", metavar="C", help="fixed concurrency (repeat "
                                                                                        "to sweep) [1]")
    serve.add_argument("--rate", type=float, action="append", metavar="R", help="arrivals per second instead "
                                                                                   "(repeat to sweep)")
    serve.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps; 1: Poisson [1]")
    serve.add_argument("--slo-ttft-ms", type=float, metavar="MS")
    serve.add_argument("--slo-tpot-ms", type=float, metavar="MS")
    serve.add_argument("--slo-e2e-ms", type=float, metavar="MS")
    serve.add_argument("--slo-percentile", type=float, metavar="Q", help="percentile the SLOs hold at [90]")
    serve.add_argument("--search-rates", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="bisect for the highest rate meeting the SLOs")
    serve.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per-request timeout [120]")
    serve.add_argument("--seed", type=int, default=1234)
    serve.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed requests first [1]")
    serve.add_argument("--out", metavar="DIR", help="run folder [results/<run-id>]")
    serve.add_argument("--no-progress", action="store_true")

    overhead = sub.add_parser("overhead", help="harness overhead: bench's decode tok/s over a bare greedy loop's")
    overhead.add_argument("--model", default="smollm2-135m")
    overhead.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    overhead.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    overhead.add_argument("--prompt-tokens", type=int, default=64)
    overhead.add_argument("--output-tokens", type=int, default=64)
    overhead.add_argument("--rounds", type=int, default=8, help="A B pairs, interleaved")
    return parser


def _suite_from_args(args):
    from harness.config import SCENARIO_DEFAULTS, MeasureSpec, ScenarioSpec, load_suite
    from harness.errors import ConfigError

    suite = load_suite(args.suite)
    changes = {}
    if args.model:
        changes["models"] = tuple(args.model)
    if args.backend:
        from harness.backends import BACKENDS

        for name in args.backend:
            BACKENDS.check(name)
        changes["backends"] = tuple(args.backend)
    if args.device:
        changes["device"] = args.device
    if args.dtype:
        changes["dtype"] = args.dtype
    if args.repetitions is not None and args.repetitions < 1:
        raise ConfigError(f"--repetitions must be >= 1, got {args.repetitions}")
    if args.warmup is not None and args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    if args.min_seconds is not None and not 0 <= args.min_seconds < math.inf:
        raise ConfigError(f"--min-seconds must be a number >= 0, got {args.min_seconds}")
    if args.cell_timeout is not None:
        if not 0 < args.cell_timeout < math.inf:
            raise ConfigError(f"--cell-timeout must be a number of seconds > 0, got {args.cell_timeout}")
        changes["cell_timeout_s"] = args.cell_timeout
    if args.memory_limit is not None:
        if args.memory_limit < 1:
            raise ConfigError(f"--memory-limit must be a positive number of MiB, got {args.memory_limit}")
        changes["cell_memory_limit_mib"] = args.memory_limit
    if args.find_max:
        changes["scenarios"] = (ScenarioSpec("find_max", dict(SCENARIO_DEFAULTS["find_max"])),)
    measure = suite.measure
    changes["measure"] = MeasureSpec(
        warmup=measure.warmup if args.warmup is None else args.warmup,
        repetitions=measure.repetitions if args.repetitions is None else args.repetitions,
        min_seconds=measure.min_seconds if args.min_seconds is None else args.min_seconds,
    )
    return suite.replace(**changes)


# What --resume takes from the run folder instead (its suite, as resolved when it started).
SUITE_OPTIONS = ("suite", "profile", "force", "model", "backend", "device", "dtype", "repetitions", "warmup",
                 "min_seconds", "cell_timeout", "out", "memory_limit", "find_max")


def _cmd_run(args) -> int:
    from harness.errors import ConfigError
    from harness.runner import render, resume_suite, run_suite

    trust = {"online": args.online, "progress": not args.no_progress,
             "trust_remote_code": tuple(args.trust_remote_code), "allow_pickle": args.allow_pickle}
    if args.resume:
        given = [name for name in SUITE_OPTIONS if getattr(args, name) not in (None, False, "quick")]
        if given:
            raise ConfigError(f"--resume takes the suite from the run folder; --{given[0].replace('_', '-')} "
                              "cannot change it", hint=f"bench run --resume {args.resume}")
        result = resume_suite(Path(args.resume), **trust)
    else:
        result = run_suite(_suite_from_args(args), out_dir=args.out, profile=args.profile, force=args.force, **trust)
    print(render(result))
    return 1 if result.failed else 0


def _cmd_models(args) -> int:
    from harness import zoo
    from harness.results.console import table

    if args.models_command == "pull":
        model = zoo.pull(args.name, online=args.online)
        print(f"{args.name}: {model.path} ({model.source}, revision {model.revision[:12]})")
        return 0
    print(table(["model", "state", "license", "description"],
                [[e["alias"], "prepared" if e["prepared"] else "not prepared", e["license"], e["description"]]
                 for e in zoo.list_models()]))
    return 0


def _cmd_suites(args) -> int:
    from harness.config import load_suite, suite_names
    from harness.results.console import table

    print(table(["suite", "description"], [[name, load_suite(name).description] for name in suite_names()]))
    return 0


def _cmd_profiles(args) -> int:
    from harness import profiles
    from harness.results.console import table

    if args.profiles_command == "show":
        profile = profiles.get_profile(args.name)
        print(Path(profile.file).read_text().rstrip())
        return 0
    if args.profiles_command == "detect":
        from harness.hardware import detect_device, device_name, memory_gb

        device = detect_device(args.device)
        found, reason = profiles.detect(device, device_name(device), memory_gb(device))
        print(f"{found.name if found else 'none'}: {reason}")
        return 0
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


def _cmd_calibrate(args) -> int:
    from harness.hardware import auto_dtype, detect_device
    from harness.measure.calibration import calibrate

    device = detect_device(args.device)
    dtype = auto_dtype(device) if args.dtype == "auto" else args.dtype
    result, _ = calibrate(device, dtype, fresh=True)
    for label, stats, unit in (("copy bandwidth (read + write)", result.bandwidth_stats, "GB/s"),
                               (f"{dtype} matmul n={result.matmul_n}", result.matmul_stats, "TFLOP/s")):
        print(f"{label:<32} median {stats['median']:.4g} {unit}  p10 {stats['p10']:.4g}  p90 {stats['p90']:.4g}  "
              f"cv {stats['cv']:.3f}  n {stats['n']}")
    print(f"device {device} ({result.device_name}); cached for later runs")
    return 0


def _cmd_claims(args) -> int:
    from harness import claims
    from harness.errors import ConfigError
    from harness.results.merge import load

    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        runs = sorted(p.parent for p in Path("results").glob("*/rows.jsonl"))
        if not runs:
            raise ConfigError("no run folder under results/", hint="bench run --suite claims, or name a run folder")
        run_dir = runs[-1]
    if not (run_dir / "rows.jsonl").exists():
        raise ConfigError(f"{run_dir} is not a run folder: it has no rows.jsonl")
    rows, _ = load([str(run_dir)])  # rows of any schema version this bench reads, in the current layout
    print(claims.write_report(run_dir, claims.verdicts(rows)))
    print(f"\nwritten: {run_dir / 'claims.md'}, {run_dir / 'claims.csv'}")
    return 0


def _cmd_overhead(args) -> int:
    from harness.overhead import measure_overhead

    print(measure_overhead(args.model, args.device, args.dtype, args.prompt_tokens, args.output_tokens,
                           args.rounds).describe())
    return 0


def _cmd_serve_bench(args) -> int:
    """Builds a one-scenario suite for the `openai` backend and runs it like any other, so the suite's validation
    checks the values and the rows land as any run's do."""
    import tempfile

    from harness.config import load_suite_file
    from harness.results.store import write_yaml
    from harness.runner import render, run_suite

    slo = {key: value for key, value in (("ttft_ms", args.slo_ttft_ms), ("tpot_ms", args.slo_tpot_ms),
                                         ("e2e_latency_ms", args.slo_e2e_ms), ("percentile", args.slo_percentile))
           if value is not None}
    scenario = {"name": "served", "endpoint": args.endpoint, "prompts": args.prompts,
                "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens, "requests": args.requests,
                "concurrency": args.concurrency or [1], "rates": args.rate or [], "burstiness": args.burstiness,
                "slo": slo, "search_rates": args.search_rates or [], "timeout_s": args.timeout, "seed": args.seed}
    suite = {"name": "serve-bench", "description": f"served load against {args.base_url}",
             "models": [args.tokenizer or args.model], "backends": ["openai"], "scenarios": [scenario],
             "measure": {"warmup": args.warmup}, "server": {"base_url": args.base_url, "model_name": args.model}}
    with tempfile.TemporaryDirectory() as folder:
        write_yaml(Path(folder) / "serve-bench.yaml", suite)
        spec = load_suite_file(Path(folder) / "serve-bench.yaml")
    result = run_suite(spec, out_dir=args.out, progress=not args.no_progress)
    print(render(result))
    return 1 if result.failed else 0


def _cmd_merge(args) -> int:
    from harness.results import merge

    loaded = merge.load_table(args.dirs)
    written = merge.write_tables(Path(args.out), loaded)
    print(f"{loaded.table.num_rows} rows from {len(loaded.folders)} runs ({loaded.duplicates} exact duplicates "
          f"dropped); written: {', '.join(str(p) for p in written)}")
    return 0


def _cmd_compare(args) -> int:
    from harness.errors import ConfigError
    from harness.results import compare, merge

    if not 0 <= args.threshold < math.inf:
        raise ConfigError(f"--threshold must be a number of percent >= 0, got {args.threshold:g}")
    ignore = compare.check_ignore(args.ignore)
    threshold = args.threshold / 100
    changes, unpaired = compare.compare(merge.load([args.base])[0], merge.load([args.new])[0], threshold, ignore)
    print(compare.report(changes, unpaired, ignore, threshold))
    if not changes:
        raise ConfigError("no comparable figures: BASE and NEW share no comparability key",
                          hint="--ignore FIELD pairs rows across a setting that differs (named above)")
    return 1 if any(c.regressed for c in changes) else 0


def _cmd_leaderboard(args) -> int:
    from harness.results import leaderboard, merge

    written = leaderboard.build(merge.load_table(args.dirs), Path(args.out))
    print(f"written: {', '.join(str(p) for p in written)}")
    return 0


COMMANDS = {"run": _cmd_run, "models": _cmd_models, "suites": _cmd_suites, "profiles": _cmd_profiles,
            "calibrate": _cmd_calibrate, "claims": _cmd_claims,
            "merge": _cmd_merge, "compare": _cmd_compare, "leaderboard": _cmd_leaderboard,
            "overhead": _cmd_overhead, "serve-bench": _cmd_serve_bench}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed its one-line usage error
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, f"{args.command}_command", "") is None:  # a command group given without its action
        print(f"bench {args.command}: say which action; see bench {args.command} --help", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
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
