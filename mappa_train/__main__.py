"""Command line: ``python -m mappa_train [--config FILE] [--section.field VALUE ...]``."""

from __future__ import annotations

import argparse
import sys

from mappa_train.config import (ConfigError, add_arguments, load_config, overrides_from_args, per_agent_models,
                                unknown_option)

COMMANDS = ("--config", "--output-dir", "--resume", "--print-config", "--help")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mappa_train",
        # argparse's usage would list every setting; a mistake then costs 40 lines of it
        usage="%(prog)s [--config FILE] [--section.field VALUE ...] [--output-dir DIR] [--resume] [--print-config]",
        description="Train every agent of a team on its own weights from per-action process rewards. Without "
        "--config it runs the embedded CPU default (packaged SmolLM2-135M, one LoRA adapter per agent, "
        "dsbench-v0, coach auto). Every setting below can be overridden; shipped configs: tiny, cpu, mappa-gpu.",
    )
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML file, or a shipped config's name")
    parser.add_argument("--output-dir", default=None, help="where logs, checkpoints and report.md go (default: runs/<run-name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output directory")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    add_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    try:
        models, unknown = per_agent_models(unknown)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if unknown:
        print(f"error: {unknown_option(unknown, COMMANDS)} See python -m mappa_train --help.", file=sys.stderr)
        return 2
    overrides = overrides_from_args(args)
    if args.output_dir:
        overrides.setdefault("run", {})["output_dir"] = args.output_dir
    if args.resume:
        overrides.setdefault("run", {})["resume"] = True
    try:
        config = load_config(args.config, overrides, per_agent=models)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0

    from mappa_train.distributed import is_main_process
    from mappa_train.trainer import train

    from mappa_env.error import Error

    try:
        out = train(config)
    except (ValueError, OSError, ImportError, Error) as exc:  # bad input, broken infrastructure, no coach
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if is_main_process():
        print(f"done: {out} (report.md, TensorBoard logs: tensorboard --logdir {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
