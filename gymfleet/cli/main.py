"""``gymfleet``: run / collect / status / config / quickstart. A thin shell over Python functions.

Every command also accepts Hydra-style overrides (``+k=v``, ``++k=v``, ``k=v``, ``~k``) after its flags, exactly as
the ``ng_*`` commands do. Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape

from gymfleet.errors import ConfigError, GymFleetError
from gymfleet.fdlimit import raise_open_file_limit
from gymfleet.logs import configure_logging

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _config_overrides(files: Sequence[str] | None, overrides: Sequence[str]) -> list[str]:
    tokens = list(overrides)
    if files:
        tokens.insert(0, "+config_paths=[" + ",".join(files) + "]")
    return tokens


def _head_overrides(head: str | None) -> list[str]:
    if not head:
        return []
    host, _, port = head.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--head expects HOST:PORT (e.g. 127.0.0.1:11000), got {head!r}")
    return [f"++head_server.host={host}", f"++head_server.port={port}"]


def _apply_security(config: Any) -> None:
    """Fleet token on every fleet call (env GYMFLEET_TOKEN or config fleet_token), TLS, secrets masked in logs."""
    from gymfleet.security import apply_process_settings, settings_from_config

    apply_process_settings(settings_from_config(config))


def cmd_run(args: argparse.Namespace) -> int:
    from gymfleet.config import load_config
    from gymfleet.launcher import LaunchOptions, run_fleet
    from gymfleet.security import prepare_launcher_config, scrub_own_environ

    cfg = load_config(_config_overrides(args.config, args.overrides))
    prepare_launcher_config(cfg)  # $GYMFLEET_TOKEN / session secret -> the config (children get a 0600 file)
    scrub_own_environ()  # ... and out of this process's /proc/<pid>/environ, before any zygote forks from it
    mode = args.mode or cfg.get("launch_mode") or "auto"
    options = LaunchOptions(mode=mode, log_dir=args.log_dir, quiet=args.quiet,
                            startup_timeout_s=float(cfg.get("startup_timeout_s", args.startup_timeout)),
                            ready_file=getattr(args, "ready_file", None) or cfg.get("ready_file"))
    run_fleet(cfg, options)
    return EXIT_OK


def cmd_collect(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from gymfleet import transport
    from gymfleet.cli.collect import collect_with_client, print_summary, write_summary_json
    from gymfleet.client import ServerClient
    from gymfleet.config import load_config

    flags = []
    for key, value in (("agent_name", args.agent), ("input_jsonl_fpath", args.input),
                       ("output_jsonl_fpath", args.output), ("limit", args.limit),
                       ("num_repeats", args.num_repeats), ("num_samples_in_parallel", args.concurrency),
                       ("metrics_port", getattr(args, "metrics_port", None))):
        if value is not None:
            flags.append(f"++{key}={value}")
    if args.resume:
        flags.append("++resume_from_cache=true")
    if args.quiet:
        flags.append("++quiet=true")
    cfg = load_config(_config_overrides(args.config, [*args.overrides, *flags, *_head_overrides(args.head)]))
    settings: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    _apply_security(settings)
    client = ServerClient.load_from_global_config(settings.get("head_server"))
    async def collect() -> Any:
        try:
            return await collect_with_client(client, settings)
        finally:
            await transport.close_sessions()

    summary = asyncio.run(collect())
    print_summary(summary)
    if getattr(args, "summary_json", None):
        write_summary_json(summary, args.summary_json)
    return EXIT_OK if summary.ok else EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    from gymfleet import transport
    from gymfleet.client import _head_url
    from gymfleet.config import load_config
    from gymfleet.status import fetch_status, format_status

    overrides = [*args.overrides, *_head_overrides(args.head)]
    try:
        cfg = load_config(overrides)  # env.yaml may hold the fleet token
    except ConfigError:
        cfg = load_config(overrides, load_env_yaml=False)
    _apply_security(cfg)

    async def status() -> Any:
        try:
            return await fetch_status(_head_url(cfg["head_server"]) or "http://127.0.0.1:11000")
        finally:
            await transport.close_sessions()

    instances = asyncio.run(status())
    if args.json:
        sys.stdout.write(orjson.dumps(instances, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(format_status(instances))
    return EXIT_OK if all(e.get("healthy") for e in instances) else EXIT_FAILURE


def cmd_config(args: argparse.Namespace) -> int:
    from gymfleet.config import load_config, to_yaml

    cfg = load_config(_config_overrides(args.config, args.overrides), strict_refs=args.strict)
    sys.stdout.write(to_yaml(cfg, resolve=True, redact=True))
    return EXIT_OK


def cmd_quickstart(args: argparse.Namespace) -> int:
    from gymfleet.cli.quickstart import run_quickstart

    summary = asyncio.run(run_quickstart(num_repeats=args.repeats, output=args.output, model=args.model,
                                         console=Console()))
    return EXIT_OK if summary.ok else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gymfleet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", action="append", metavar="FILE", help="config file (repeatable)")
        p.add_argument("overrides", nargs="*", help="Hydra-style overrides: +k=v ++k=v k=v ~k")

    run = sub.add_parser("run", help="start this node's part of a fleet (head, servers, or both)")
    with_config(run)
    modes = run.add_mutually_exclusive_group()
    modes.add_argument("--head-only", dest="mode", action="store_const", const="head-only",
                       help="run only the head server")
    modes.add_argument("--worker", dest="mode", action="store_const", const="worker",
                       help="join the head named by head_server (never start one)")
    modes.add_argument("--head", dest="mode", action="store_const", const="head",
                       help="start the head here together with the servers")
    run.add_argument("--log-dir", help="per-server log files go here")
    run.add_argument("--quiet", action="store_true", help="do not echo server output (log files still get it)")
    run.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for all servers")
    run.add_argument("--ready-file", help="write a JSON file with the head URL and server URLs once ready")
    run.set_defaults(func=cmd_run)

    collect = sub.add_parser("collect", help="collect rollouts from a running fleet")
    with_config(collect)
    collect.add_argument("-a", "--agent", help="agent for rows without agent_ref")
    collect.add_argument("-i", "--input", help="input JSONL")
    collect.add_argument("-o", "--output", help="output JSONL")
    collect.add_argument("--limit", type=int)
    collect.add_argument("--num-repeats", type=int)
    collect.add_argument("--concurrency", type=int, help="rollouts in flight (num_samples_in_parallel)")
    collect.add_argument("--resume", action="store_true", help="resume the run at --output")
    collect.add_argument("--head", help="HOST:PORT of the head (default from config, 127.0.0.1:11000)")
    collect.add_argument("--quiet", action="store_true", help="log progress lines instead of a live bar")
    collect.add_argument("--summary-json", metavar="FILE",
                         help="also write the final accounting (counts by class, timings) as JSON to FILE")
    collect.add_argument("--metrics-port", type=int,
                         help="serve Prometheus /metrics of this collection on this port (metrics_host, 127.0.0.1)")
    collect.set_defaults(func=cmd_collect)

    status = sub.add_parser("status", help="table of registered servers and their health")
    status.add_argument("--head", help="HOST:PORT of the head")
    status.add_argument("--json", action="store_true")
    status.add_argument("overrides", nargs="*")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser("config", help="print the resolved config (secrets hidden)")
    with_config(config)
    config.add_argument("--strict", action="store_true", help="unknown server references are errors")
    config.set_defaults(func=cmd_config)

    quick = sub.add_parser("quickstart", help="start the example fleet, collect rollouts, print rewards, stop")
    quick.add_argument("--model", choices=["local", "scripted"], default="local",
                       help="local: SmolLM2-135M on the CPU (needs gymfleet[local-model]); scripted: a stand-in")
    quick.add_argument("--repeats", type=int, default=None, help="rollouts per example row")
    quick.add_argument("--output", default=".gymfleet/quickstart/rollouts.jsonl")
    quick.set_defaults(func=cmd_quickstart)

    from gymfleet.deploy.cli import add_deploy_parser

    add_deploy_parser(sub)
    return parser


def dispatch(func: Any, args: argparse.Namespace) -> int:
    """Run a command; turn gymfleet errors into a readable message and an exit code."""
    try:
        return int(func(args))
    except ConfigError as exc:
        Console(stderr=True).print(f"[bold red]config error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except GymFleetError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.command == "quickstart" and not args.verbose)
    raise_open_file_limit()
    return dispatch(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
