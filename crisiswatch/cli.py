"""Every command. Thin: parse the arguments, call the library, set the exit code.

Exit codes: 0 success; 1 a check failed or input was invalid; 2 the command could not run as
asked: a usage error, an unknown brand or rule, or an input it cannot read (detect-series).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from crisiswatch import __version__, checkpoint, feedback_cli, silence_cli
from crisiswatch.checkpoint import Checkpoint
from crisiswatch.config import LiveSettings, Settings, load_settings, state_dir
from crisiswatch.daemon import Daemon, RunSummary
from crisiswatch.durations import parse_duration
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.notify import Notifier
from crisiswatch.notify.console import ConsoleNotifier
from crisiswatch.ops.logging import LEVELS, configure_logging
from crisiswatch.ops.systemd import SdNotify
from crisiswatch.pipeline import Pipeline, settle
from crisiswatch.rules.loader import load_rules, rule_warnings
from crisiswatch.rules.schema import Rule
from crisiswatch.sources import Source
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.sources.resilience import SourceSetupError
from crisiswatch.store import STORE_FILE, Store, StoreError
from crisiswatch.yamlfile import ProblemsError

log = structlog.get_logger(__name__)

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_CONFIG = DEMO_DIR / "config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    _standard_streams()
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        code: int = args.handler(args)
    except ProblemsError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"crisiswatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def _standard_streams() -> None:
    """A standard stream the caller closed (`<&-`, `>&-`, `2>&-`) reads as empty or writes to
    nowhere, rather than failing with a traceback deep in a command."""
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115  # for the process's life
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crisiswatch",
        description="Watch brand mentions, detect crises early, page the comms team.",
    )
    parser.add_argument("--version", action="version", version=f"crisiswatch {__version__}")
    parser.add_argument("--log-level", choices=LEVELS, default="warning")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon (with no --config: the embedded demo)")
    run.add_argument("--config", type=Path, help="a deployment's config file")
    run.set_defaults(handler=_run)

    doctor = commands.add_parser(
        "doctor", help="check a deployment: config, rules, state, credentials; exit 1 on a problem"
    )
    doctor.add_argument(
        "--config", type=Path, default=Path("/etc/crisiswatch/crisiswatch.yaml"),
        help="default: /etc/crisiswatch/crisiswatch.yaml (the systemd unit's)",
    )  # fmt: skip
    doctor.set_defaults(handler=_doctor)

    backtest = commands.add_parser(
        "backtest", help="replay a mentions file and print the pages it would have sent"
    )
    backtest.add_argument("mentions", type=Path, help="mention JSON lines, optionally gzipped")
    backtest.add_argument(
        "--config", type=Path, help="the deployment's config (default: the demo's, Kestrel Bank)"
    )
    backtest.add_argument("--rules", type=Path, action="append", help="rules file or folder")
    backtest.add_argument(
        "--compare",
        type=Path,
        action="append",
        metavar="OTHER",
        help="also run these rules; print the difference in pages per rule and route",
    )
    backtest.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per page, sent or overtaken (`sent`), the counts on stderr (with "
        "--compare, one object for the comparison)",
    )
    backtest.set_defaults(handler=_backtest)

    rules = commands.add_parser("rules", help="work with alert rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = rules_commands.add_parser("check", help="validate rule files; exit 1 on any problem")
    check.add_argument(
        "paths",
        type=Path,
        nargs="*",
        help="files or folders (default: the config's rules with --config, else rules/)",
    )
    check.add_argument(
        "--config", type=Path, help="also check brands, topics, sources and routes against it"
    )
    check.set_defaults(handler=_rules_check)
    test = rules_commands.add_parser(
        "test", help="run rule tests (*_test.yaml): expected pages for given input series"
    )
    test.add_argument(
        "paths", type=Path, nargs="*", help="test files or folders (default: rules/tests/)"
    )
    test.set_defaults(handler=_rules_test)

    detect = commands.add_parser(
        "detect-series", help="score a timestamp,value CSV of bucket counts as the daemon would"
    )
    detect.add_argument("csv", type=Path, help="a CSV with header timestamp,value ('-': stdin)")
    detect.set_defaults(handler=_detect_series)

    bench = commands.add_parser("bench", help="measure detection quality and speed")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    nab = benches.add_parser("nab", help="volume detection on NAB's Twitter mention series")
    nab.add_argument("--data", type=Path, default=Path("../shared/data/nab-realtweets"))
    nab.add_argument("--out", type=Path, default=Path("bench-out/nab"), help="PNG folder")
    nab.set_defaults(handler=_bench_nab)
    sentiment_bench = benches.add_parser(
        "sentiment", help="sentiment quality and speed on TweetEval"
    )
    sentiment_bench.add_argument("--data", type=Path, default=Path("../shared/data"))
    sentiment_bench.set_defaults(handler=_bench_sentiment)
    pipeline_bench = benches.add_parser("pipeline", help="the whole pipeline's speed and memory")
    pipeline_bench.add_argument("--mentions", type=_positive(int), default=200_000)
    pipeline_bench.add_argument("--brands", type=_positive(int), default=1)
    pipeline_bench.add_argument("--file", type=Path, help="mention JSON lines instead")
    pipeline_bench.add_argument(
        "--config",
        type=Path,
        help="with --file: measure it with this deployment's brands and rules (default: the "
        "benchmark's made-up brands, which a real stream is not about)",
    )
    pipeline_bench.add_argument(
        "--rate",
        type=_positive(float),
        help="generated mentions per second of event time (default 6,000, the X firehose's "
        "average; 2.3 puts a day in 200,000 mentions, so judging buckets dominates)",
    )
    pipeline_bench.add_argument(
        "--warm-up",
        type=_duration,
        help="event time fed first to a generated stream, at 2.3 mentions/s and not measured, "
        "so buckets are judged by detectors past their first day, as a running daemon's are "
        "(default 25h; 0 for none)",
    )
    pipeline_bench.add_argument(
        "--surging",
        type=_positive(int, zero_too=True),
        metavar="N",
        help="warm up at the generated stream's own density instead, so that its volumes are "
        "as usual to the detectors but for N of its brands, mentioned 4× as often (by default, "
        "a firehose-density stream after the 2.3 mentions/s warm-up is a surge in every brand)",
    )
    pipeline_bench.set_defaults(handler=_bench_pipeline)

    sentiment = commands.add_parser("sentiment", help="the sentiment model")
    sentiment_commands = sentiment.add_subparsers(
        dest="sentiment_command", required=True, metavar="COMMAND"
    )
    predict = sentiment_commands.add_parser(
        "predict", help="JSON lines in ({text, label?}), one prediction per line out"
    )
    predict.add_argument("--no-learn", action="store_true", help="never learn from labels")
    predict.set_defaults(handler=_sentiment_predict)
    silence_cli.add_parser(commands)
    feedback_cli.add_parser(commands)
    return parser


def _duration(text: str) -> timedelta:
    """An argparse type: a duration as rules write it (`25h`, `1d`, `0`)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(
    kind: Callable[[str], int | float], *, zero_too: bool = False
) -> Callable[[str], int | float]:
    """An argparse type: a number above zero (or zero too), else argparse's one-line usage
    error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero_too else value > 0):
            least = "zero or more" if zero_too else "above zero"
            raise argparse.ArgumentTypeError(f"must be {least}, not {text}")
        return value

    return parse


def _load_deployment(config: Path | None) -> Settings:
    return load_settings(config if config is not None else DEMO_CONFIG)


def _run(args: argparse.Namespace) -> int:
    if args.config is None:
        return _run_demo()
    settings = load_settings(args.config)
    rules = load_rules(settings.rules, settings)
    directory = state_dir(settings)
    summary = asyncio.run(_serve(settings, rules, [], directory, finite=False, config=args.config))
    print(f"stopped: {summary}")
    return 0


def _run_demo() -> int:
    settings = _load_deployment(None)
    rules = load_rules(settings.rules, settings)
    print(
        f"crisiswatch demo: replaying {_replay_path(settings).name} for "
        f"{', '.join(b.display_name for b in settings.brands)} with {len(rules)} rules\n"
    )
    with tempfile.TemporaryDirectory(prefix="crisiswatch-demo-") as tmp:
        summary = asyncio.run(_serve(settings, rules, [], Path(tmp), finite=True))
    print(f"demo finished: {summary}")
    return 0


def _replay_path(settings: Settings) -> Path:
    replay = settings.sources.replay
    assert replay is not None, "the demo config has a replay source"
    return replay.path


async def _serve(
    settings: Settings,
    rules: list[Rule],
    notifiers: list[Notifier],
    directory: Path,
    *,
    finite: bool,
    config: Path | None = None,
    watch: Callable[[ReplaySource], None] | None = None,
) -> RunSummary:
    """Run the daemon; with `config`, it reloads that file and its rules when they change.
    `notifiers` are extra to the console (when `notify.console`) and Slack (when enabled)."""
    from crisiswatch.notify.feedback import ControlLink
    from crisiswatch.notify.slack_runtime import SlackSetupError, slack_running
    from crisiswatch.sources.build import build_sources

    store = await Store.open(directory / STORE_FILE)
    try:
        saved = None if finite else await asyncio.to_thread(checkpoint.load, directory)
        model = await asyncio.to_thread(_sentiment_model, saved)
        live_clock = None if finite else partial(datetime.now, UTC)  # refuses future dates
        pipeline = Pipeline(settings, rules, model, clock=live_clock)
        if saved is not None:
            pipeline.restore(saved.pipeline)
            log.info("checkpoint.restored", saved_at=saved.saved_at.isoformat())
        settle()
        sources: list[Source] = []
        replay = settings.sources.replay
        if finite and replay is not None:  # the demo and backtests: the replay alone
            replayed = ReplaySource(replay.path, speed=replay.speed)
            if watch is not None:
                watch(replayed)  # a progress display follows how far it has read
            sources.append(replayed)
        elif not finite:
            sources = build_sources(settings, store)
        link = ControlLink()  # Slack's Resolve / False alarm reach the daemon once it exists
        live = LiveSettings(settings)  # what every part reads; a reload swaps it
        console = [ConsoleNotifier(live)] if settings.notify.console else []
        async with slack_running(live, store, pipeline.history, model, link) as slack:
            daemon = Daemon(
                pipeline,
                sources,
                [*console, *notifiers, *slack.notifiers],
                store,
                queue_size=settings.pipeline.queue_size,
                config=config,
                tick_seconds=settings.sources.tick.total_seconds(),
                notice_after=settings.sources.notice_after.total_seconds(),
                catch_up_seconds=settings.sources.catch_up_wait.total_seconds(),
                checkpoint_dir=None if finite else directory,
                checkpoint_seconds=settings.ops.checkpoint_every.total_seconds(),
                systemd=SdNotify(),
                ops_listen=None if finite else settings.ops.http_listen,
                live=live,
            )
            link.target = daemon
            return await daemon.run(exit_when_sources_end=finite)
    except (SlackSetupError, SourceSetupError) as exc:
        raise SystemExit(f"crisiswatch: {exc}") from None
    finally:
        await store.close()


def _sentiment_model(saved: Checkpoint | None) -> SentimentModel:
    """The shipped model, with what it learned from feedback when a checkpoint has it."""
    if saved is not None and saved.sentiment is not None:
        try:
            return SentimentModel.from_state(saved.sentiment)
        except ValueError as exc:
            log.error("checkpoint.sentiment_dropped", reason=str(exc))
    return SentimentModel.load_default()


def _doctor(args: argparse.Namespace) -> int:
    from crisiswatch.doctor import doctor

    return doctor(args.config, sys.stdout)


def _backtest(args: argparse.Namespace) -> int:
    from crisiswatch.backtest import backtest

    settings = _load_deployment(args.config)
    deployment = (
        str(args.config)
        if args.config is not None
        else f"the demo's, {DEMO_CONFIG} (give --config FILE for yours)"
    )
    return backtest(
        settings,
        args.mentions,
        _serve,
        deployment=deployment,
        rules=args.rules,
        compare=args.compare,
        as_json=args.json,
    )


def _detect_series(args: argparse.Namespace) -> int:
    from crisiswatch.detect.series import detect_series

    stdin = str(args.csv) == "-"
    try:
        raw = sys.stdin.buffer if stdin else args.csv.open("rb")
    except OSError as exc:
        print(f"detect-series: cannot read {args.csv}: {exc.strerror}", file=sys.stderr)
        return 2
    # UTF-8 whatever the locale; utf-8-sig reads past the byte-order mark Excel writes
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
        try:
            return detect_series(handle, sys.stdout, sys.stderr)
        except UnicodeDecodeError:
            name = "stdin" if stdin else args.csv
            print(f"detect-series: {name} is not UTF-8 text", file=sys.stderr)
            return 2


def _bench_nab(args: argparse.Namespace) -> int:
    from crisiswatch.bench.nab import bench_nab

    return bench_nab(args.data, args.out, sys.stdout)


def _bench_sentiment(args: argparse.Namespace) -> int:
    from crisiswatch.bench.sentiment import bench_sentiment

    return bench_sentiment(args.data, sys.stdout)


def _bench_pipeline(args: argparse.Namespace) -> int:
    from crisiswatch.bench.pipeline import FIREHOSE_RATE, WARM_UP, BenchInputError, bench_pipeline

    if args.config is not None and args.file is None:
        print("crisiswatch bench pipeline: --config goes with --file", file=sys.stderr)
        return 2
    for given, option in ((args.warm_up, "--warm-up"), (args.surging, "--surging")):
        if given is not None and args.file is not None:
            message = f"{option} goes with a generated stream"
            print(f"crisiswatch bench pipeline: {message}", file=sys.stderr)
            return 2
    if args.surging is not None and args.warm_up is not None and not args.warm_up:
        print("crisiswatch bench pipeline: --surging needs a warm-up", file=sys.stderr)
        return 2
    if args.surging is not None and args.surging > args.brands:
        print("crisiswatch bench pipeline: --surging is more than --brands", file=sys.stderr)
        return 2
    try:
        return bench_pipeline(
            sys.stdout,
            mentions=args.mentions,
            brands=args.brands,
            path=args.file,
            rate=args.rate or FIREHOSE_RATE,
            settings=load_settings(args.config) if args.config else None,
            warm_up=WARM_UP if args.warm_up is None else args.warm_up,
            surging=args.surging,
        )
    except BenchInputError as exc:
        print(f"crisiswatch bench pipeline: {exc}", file=sys.stderr)
        return 1


def _sentiment_predict(args: argparse.Namespace) -> int:
    from crisiswatch.enrich.predict_cli import predict_stream
    from crisiswatch.enrich.sentiment import SentimentModel

    model = SentimentModel.load_default()
    return predict_stream(sys.stdin.buffer, sys.stdout, sys.stderr, not args.no_learn, model)


def _rules_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else None
    paths = args.paths or (settings.rules if settings else [Path("rules")])
    rules = load_rules(paths, settings)
    print(f"{len(rules)} rules OK")
    for warning in rule_warnings(rules, settings) if settings else []:
        print(f"WARN {warning}")
    return 0


def _rules_test(args: argparse.Namespace) -> int:
    from crisiswatch.rules.testing import run_tests

    return run_tests(args.paths or [Path("rules/tests")], sys.stdout)
