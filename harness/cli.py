"""The `bench` command. main(argv) -> exit code is a pure function of its arguments, callable from tests.

Every user error becomes one line on stderr, a hint, and exit code 2; never a traceback.
"""

import argparse
import sys
from pathlib import Path

from harness.errors import BenchError

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

    overhead = sub.add_parser("overhead", help="harness overhead: bench's decode tok/s over a bare greedy loop's")
    overhead.add_argument("--model", default="smollm2-135m")
    overhead.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    overhead.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    overhead.add_argument("--prompt-tokens", type=int, default=64)
    overhead.add_argument("--output-tokens", type=int, default=64)
    overhead.add_argument("--rounds", type=int, default=8, help="A B pairs, interleaved")
    return parser


def _suite_from_args(args):
    from harness.config import MeasureSpec, load_suite
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
    if args.min_seconds is not None and args.min_seconds < 0:
        raise ConfigError(f"--min-seconds must be >= 0, got {args.min_seconds}")
    if args.cell_timeout is not None:
        if args.cell_timeout <= 0:
            raise ConfigError(f"--cell-timeout must be > 0, got {args.cell_timeout}")
        changes["cell_timeout_s"] = args.cell_timeout
    measure = suite.measure
    changes["measure"] = MeasureSpec(
        warmup=measure.warmup if args.warmup is None else args.warmup,
        repetitions=measure.repetitions if args.repetitions is None else args.repetitions,
        min_seconds=measure.min_seconds if args.min_seconds is None else args.min_seconds,
    )
    return suite.replace(**changes)


def _cmd_run(args) -> int:
    from harness.runner import render, run_suite

    suite = _suite_from_args(args)
    result = run_suite(suite, out_dir=args.out, online=args.online, progress=not args.no_progress,
                       profile=args.profile, force=args.force)
    print(render(result))
    return 1 if result.failed else 0


def _cmd_models(args) -> int:
    from harness import zoo

    if args.models_command == "pull":
        model = zoo.pull(args.name, online=args.online)
        print(f"{args.name}: {model.path} ({model.source}, revision {model.revision[:12]})")
        return 0
    for entry in zoo.list_models():
        state = "prepared" if entry["prepared"] else "not prepared"
        print(f"{entry['alias']:<16} {state:<13} {entry['license']:<12} {entry['description']}")
    return 0


def _cmd_suites(args) -> int:
    from harness.config import load_suite, suite_names

    for name in suite_names():
        print(f"{name:<12} {load_suite(name).description}")
    return 0


def _cmd_profiles(args) -> int:
    from harness import profiles

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
    row = "{:<15} {:<6} {:>9} {:>14} {:>12} {:>7}  {}"
    print(row.format("profile", "kind", "memory_GB", "bandwidth_GB/s", "bf16_TFLOP/s", "$/h", "description"))
    for name in profiles.profile_names():
        p = profiles.get_profile(name)
        figures = [_number(v) for v in (p.memory_gb, p.memory_bandwidth_gbps, p.bf16_tflops, p.price_usd_per_hour)]
        print(row.format(p.name, p.kind, *figures, p.description))
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
    from harness.results.store import read_rows

    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        runs = sorted(p.parent for p in Path("results").glob("*/rows.jsonl"))
        if not runs:
            raise ConfigError("no run folder under results/", hint="bench run --suite claims, or name a run folder")
        run_dir = runs[-1]
    if not (run_dir / "rows.jsonl").exists():
        raise ConfigError(f"{run_dir} is not a run folder: it has no rows.jsonl")
    print(claims.write_report(run_dir, claims.verdicts(read_rows(run_dir / "rows.jsonl"))))
    print(f"\nwritten: {run_dir / 'claims.md'}, {run_dir / 'claims.csv'}")
    return 0


def _cmd_overhead(args) -> int:
    from harness.overhead import measure_overhead

    print(measure_overhead(args.model, args.device, args.dtype, args.prompt_tokens, args.output_tokens, args.rounds))
    return 0


COMMANDS = {"run": _cmd_run, "models": _cmd_models, "suites": _cmd_suites, "profiles": _cmd_profiles,
            "calibrate": _cmd_calibrate, "claims": _cmd_claims,
            "overhead": _cmd_overhead}


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
