"""Command line: ``python -m mappa_env evaluate|coach|coach-bench|list|sandbox``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mappa_env.sandbox.base import DEFAULT_EXEC_TIMEOUT_S
from mappa_env.tasks.task import SPLITS

COACH_HELP = "receipts, auto, openai:<model> or hf:<path-or-id>"


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object, e.g. '{"base_url": "http://127.0.0.1:8000/v1", "max_in_flight": 16}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"max_in_flight\": 16}}', got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mappa_env",
        description="MAPPA environments: evaluate teams of agents on multi-agent tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "evaluate",
        help="run a team policy on a split and print the results table",
        description="Run a team policy on every task of a split and print the environment's results table "
        "(dsbench-v0: Success Rate, Accuracy (Fair), F1 (Fair), RMSE (Fair), RPG; mathchat-v0: Accuracy, Unparsed), "
        "mean@k and pass@k per task type with --samples, and the coaching summary. Results (every episode, every "
        "step) are written as JSON.",
    )
    ev.add_argument("--policy", default="scripted",
                    help="scripted (the env's reference team), a faulty team (buggy-missing-x-test, ..., math-executor-crash, "
                    "...), openai:<model> or hf:<path-or-id> (default: scripted)")
    ev.add_argument("--env", default="dsbench-v0", help="environment id (default: dsbench-v0)")
    ev.add_argument("--split", default="heldout", choices=SPLITS, help="task split (default: heldout)")
    ev.add_argument("--suite", default=None, help="task suite: dsbench-v0: builtin (default), dsbench, user or a task "
                    "directory; mathchat-v0: arith (default), champ, jsonl or a problem file")
    ev.add_argument("--suite-kwargs", type=json_object, default={}, metavar="JSON",
                    help="more suite options as a JSON object, e.g. '{\"levels\": [1]}' for mathchat-v0's arith")
    ev.add_argument("--policy-kwargs", type=json_object, default={}, metavar="JSON",
                    help="options of an openai:/hf: team, e.g. '{\"max_new_tokens\": 128, \"temperature\": 1.0}'")
    ev.add_argument("--suite-root", default=None, help="data root for --suite dsbench / user, the problem file for jsonl")
    ev.add_argument("--episodes", type=int, default=None, help="number of tasks to play (default: every task of the split)")
    ev.add_argument("--samples", type=int, default=1,
                    help="episodes per task, with different seeds: the table then reports mean@k and unbiased "
                    "pass@k per task type (default: 1)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    ev.add_argument("--coach", default="receipts", help=f"coach: {COACH_HELP} (default: receipts)")
    ev.add_argument("--coach-kwargs", type=json_object, default={}, metavar="JSON",
                    help="coach options as a JSON object, e.g. '{\"base_url\": \"http://127.0.0.1:8000/v1\"}' "
                    "(see docs/coach.md)")
    ev.add_argument("--sandbox", default="local",
                    help="sandbox backend: local (bubblewrap), docker (a container per agent; see `sandbox "
                    "build-image`) or unisolated (default: local)")
    ev.add_argument("--exec-timeout", type=float, default=None,
                    help=f"seconds per code execution (default: the environment's; {DEFAULT_EXEC_TIMEOUT_S:g} for "
                    "dsbench-v0, 30 for mathchat-v0)")
    ev.add_argument("--output", type=Path, default=None,
                    help="JSON results path (default: results/eval-<policy>-<split>.json)")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev.add_argument("--no-record-requests", action="store_true",
                    help="do not store the coach requests in the results (they let `coach` re-score episodes)")

    co = sub.add_parser(
        "coach",
        help="coach recorded episodes again and print a per-action table",
        description="Send every recorded action of an evaluation's results to a coach and print its scores "
        "and rationales next to the recorded ones with the change (new - recorded), a summary of the changes "
        "(overall and per agent, unscored actions left out), then the coach's cost and any bias it shows. "
        "Useful for checking a coach before paying for a training run.",
    )
    co.add_argument("--episodes", type=Path, required=True, help="results .json of `evaluate`, or a .jsonl of episodes")
    co.add_argument("--coach", required=True, help=f"coach: {COACH_HELP}")
    co.add_argument("--coach-kwargs", type=json_object, default={}, metavar="JSON",
                    help="more coach options as a JSON object (the flags below win over it)")
    co.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    co.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY; none needed on loopback)")
    co.add_argument("--max-in-flight", type=int, default=None, help="coach calls in flight at once (default: 8)")
    co.add_argument("--cache-dir", default=None, help="response cache directory (default: <mappa cache>/coach)")
    co.add_argument("--output", type=Path, default=None, help="also write the rows as JSON here")
    co.add_argument("--no-progress", action="store_true", help="hide the progress bar while actions are scored")

    cb = sub.add_parser(
        "coach-bench",
        help="credit-assignment benchmark: does a coach blame the agent and the action that made a fault?",
        description="Play a suite of planted faults whose culprit agent and culprit action are known (scripted "
        "teams, each with one fault, plus the fault-free team as control, on fixed tasks), record the episodes "
        "with their coach requests once, re-score them with a coach and print, per fault and overall: agent hit "
        "(the culprit agent has the strictly lowest mean score), step hit (the culprit action has the strictly "
        "lowest score of the episode; a tie is a miss), innocence (the share of agents downstream of the culprit "
        "with no action below --threshold) and, for the controls, clean (no action below --threshold). The "
        "recorded suite is kept in --episodes-file and re-used, so comparing coaches costs only coach calls. "
        "See docs/coach.md.",
    )
    cb.add_argument("--env", default="dsbench-v0", help="the team's environment: dsbench-v0 (default) or mathchat-v0")
    cb.add_argument("--coach", default="receipts", help=f"coach: {COACH_HELP} (default: receipts)")
    cb.add_argument("--coach-kwargs", type=json_object, default={}, metavar="JSON",
                    help="coach options as a JSON object, e.g. '{\"timing\": \"hindsight\"}' or "
                    "'{\"base_url\": \"http://127.0.0.1:8000/v1\"}'")
    cb.add_argument("--episodes-file", type=Path, default=None, metavar="PATH",
                    help="the recorded suite: re-scored when it exists, else played and written there "
                    "(default: results/coach-bench-<env>.json)")
    cb.add_argument("--record", action="store_true", help="play the suite again and overwrite --episodes-file")
    cb.add_argument("--sandbox", default=None, help="sandbox backend to play the suite in (default: the environment's)")
    cb.add_argument("--threshold", type=float, default=None,
                    help="a score below it flags an action: an innocent downstream agent or a control (default: 4)")
    cb.add_argument("--out", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    cb.add_argument("--no-progress", action="store_true", help="hide the progress bars (playing the suite, scoring it)")

    vw = sub.add_parser(
        "view",
        help="write a browser page of episodes: every action's reply, code output and coach verdict",
        description="Write one self-contained HTML page (no server, no network: open it from disk) of the episodes at "
        "PATH: an evaluation results file of `evaluate`, a directory of them, or a training run directory "
        "(runs/<name>: the episodes its steps sampled and its evaluations, and its curves). Filter by task, task "
        "type, outcome, agent, status, coach score, source and training step, or search the text; each episode opens "
        "as a timeline of its actions. See docs/viewer.md.",
    )
    vw.add_argument("path", type=Path, help="results .json, a directory of them, or runs/<name>")
    vw.add_argument("--output", type=Path, default=None,
                    help="the page (default: <run>/episodes.html, <dir>/episodes.html, or <results>.html beside the file)")
    vw.add_argument("--serve", action="store_true", help="also serve the page on 127.0.0.1 until Ctrl-C")
    vw.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one, printed)")

    ls = sub.add_parser("list", help="list registered environments, or the tasks of a split")
    ls.add_argument("what", choices=["envs", "tasks"])
    ls.add_argument("--split", default="all", choices=SPLITS)

    sb = sub.add_parser("sandbox", help="set up sandbox backends (build the docker image)",
                        description="Set up what a sandbox backend needs on this machine.")
    sb_sub = sb.add_subparsers(dest="action", required=True)
    bi = sb_sub.add_parser(
        "build-image",
        help="build the image of the docker sandbox backend",
        description="Build the image that sandbox=\"docker\" runs agent code in, from the Dockerfile shipped in "
        "mappa_env/sandbox/image: the base image's Python with numpy, pandas and scikit-learn at this machine's "
        "versions, and an unprivileged user; no project code, no datasets. Needs a running Docker engine on this "
        "machine (DOCKER_HOST is honoured). The build itself needs no network: this machine downloads the wheels "
        "(pip download, from PyPI or your index) and the build installs them from its context. The default base "
        "is pulled from a registry when the engine lacks it; without one, pass --base an image made offline "
        "(docs/sandbox.md). Progress is printed from the build log.",
    )
    from mappa_env.sandbox.docker_backend import DEFAULT_BASE, DEFAULT_IMAGE  # light: no Docker SDK imported

    bi.add_argument("--tag", default=DEFAULT_IMAGE,
                    help=f"image tag (default: {DEFAULT_IMAGE}, the docker backend's default image); another tag "
                    "is used with sandbox_kwargs={\"image\": TAG}")
    bi.add_argument("--base", default=DEFAULT_BASE,
                    help=f"base image: any glibc Linux image with python3 and pip (default: {DEFAULT_BASE})")
    bi.add_argument("--pull", action="store_true", help="pull a newer version of the base image first")
    bi.add_argument("--no-cache", action="store_true", help="build every layer again")

    args = parser.parse_args(argv)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "coach":
        return _coach(args)
    if args.command == "coach-bench":
        return _coach_bench(args)
    if args.command == "sandbox":
        return _build_image(args)
    if args.command == "view":
        return _view(args)
    return _list(args)


def _build_image(args: argparse.Namespace) -> int:
    from mappa_env.sandbox.base import SandboxError
    from mappa_env.sandbox.docker_backend import DEFAULT_IMAGE, build_image

    tag = args.tag
    print(f"building the docker sandbox image {tag} ...", flush=True)
    try:
        build_image(tag, base=args.base, nocache=args.no_cache, pull=args.pull,
                    log=lambda line: print(line, flush=True))
    except SandboxError as exc:  # no SDK, no engine (with the fix), or a failed build
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"built {tag}; use it with sandbox=\"docker\"" + ("" if tag == DEFAULT_IMAGE else
                                                           f" and sandbox_kwargs={{\"image\": \"{tag}\"}}"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mappa_env.error import Error
    from mappa_env.evaluation import evaluate, results_table, write_results
    from mappa_env.policies import make_policy

    if args.suite_root and args.suite not in ("dsbench", "user", "jsonl"):
        print("error: --suite-root needs --suite dsbench, user or jsonl", file=sys.stderr)
        return 2
    env_kwargs = {"coach": args.coach, "sandbox": args.sandbox}
    if args.exec_timeout is not None:
        env_kwargs["exec_timeout_s"] = args.exec_timeout
    if args.coach_kwargs:
        env_kwargs["coach_kwargs"] = args.coach_kwargs
    if args.suite:
        env_kwargs["suite"] = args.suite
    suite_kwargs = dict(args.suite_kwargs)
    if args.suite_root:
        suite_kwargs["root" if args.suite == "dsbench" else "path"] = args.suite_root
    if suite_kwargs:
        env_kwargs["suite_kwargs"] = suite_kwargs
    try:
        policy = make_policy(args.policy, env_id=args.env, **args.policy_kwargs) if args.policy_kwargs else args.policy
        results = evaluate(policy, env_id=args.env, split=args.split, episodes=args.episodes,
                           seed=args.seed, env_kwargs=env_kwargs, progress=not args.no_progress,
                           record_requests=not args.no_record_requests, samples=args.samples)
    except (ValueError, OSError, ImportError, Error) as exc:  # bad input or broken infrastructure: say what to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    safe_policy = args.policy.replace(":", "_").replace("/", "_")
    path = write_results(results, args.output or Path("results") / f"eval-{safe_policy}-{args.split}.json")
    print(results_table(results))
    print(f"\n{len(results['episodes'])} episodes; results written to {path}")
    return 0


def _view(args: argparse.Namespace) -> int:
    from mappa_env.viewer import ViewError, read_collection, write_page
    from mappa_env.viewer.serving import default_page_path, serve_page

    try:
        collection = read_collection(args.path)
    except ViewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_page(collection, args.output or default_page_path(args.path))
    actions = sum(len(e["actions"]) for e in collection.episodes)
    print(f"{len(collection.episodes)} episodes, {actions} actions: {path}")
    if args.serve:
        serve_page(path, port=args.port)
    return 0


def _coach(args: argparse.Namespace) -> int:
    from mappa_env.coach import close_coach, make_coach
    from mappa_env.coach.bias import monitor_from_records
    from mappa_env.coach.offline import change_summary, change_text, load_episodes, recoach, rows_table
    from mappa_env.error import Error
    from mappa_env.evaluation import write_results

    options = {"base_url": args.base_url, "api_key": args.api_key, "max_in_flight": args.max_in_flight,
               "cache_dir": args.cache_dir}
    options = {**args.coach_kwargs, **{k: v for k, v in options.items() if v is not None}}
    try:
        episodes = load_episodes(args.episodes)
        coach = make_coach(args.coach, **options)
        try:
            rows = recoach(episodes, coach, progress=not args.no_progress)
        finally:
            close_coach(coach)
    except (ValueError, OSError, ImportError, Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rows_table(rows))
    scored = [r for r in rows if r["score"] is not None]
    print(f"\n{len(rows)} actions, {len(scored)} scored, {len(rows) - len(scored)} unscored (coach {args.coach})")
    changes = change_summary(rows)
    print(change_text(changes))
    stats = getattr(coach, "stats", None)
    if stats is not None:
        snap = stats.snapshot()
        cost = "unknown (no price for this model)" if snap["cost_usd"] is None else f"${snap['cost_usd']:.4f}"
        print(f"calls {snap['calls']}, cache hits {snap['cache_hits']}, retries {snap['retries']}, "
              f"tokens {snap['prompt_tokens']} in / {snap['completion_tokens']} out, cost {cost}")
    for flag in monitor_from_records(rows).drift():
        print(f"bias: {flag.message}")
    if args.output:
        write_results({"coach": args.coach, "rows": rows, "change": changes}, args.output)
    return 0


def _coach_bench(args: argparse.Namespace) -> int:
    from mappa_env.coach import close_coach, make_coach
    from mappa_env.coach.bench import (THRESHOLD, default_episodes_file, load_suite, play_suite, report_summary,
                                       report_table, score_suite, suite_of)
    from mappa_env.error import Error
    from mappa_env.evaluation import write_results

    path = args.episodes_file or default_episodes_file(args.env)
    try:
        suite_of(args.env)
        coach = make_coach(args.coach, **args.coach_kwargs)  # before playing: a wrong name fails in a second
        try:
            if args.record or not path.exists():
                print(f"playing the {args.env} suite (recorded once, then re-used from {path}) ...", file=sys.stderr)
                write_results(play_suite(args.env, sandbox=args.sandbox, progress=not args.no_progress), path)
            else:
                print(f"re-scoring the suite recorded in {path} (--record plays it again)", file=sys.stderr)
            threshold = THRESHOLD if args.threshold is None else args.threshold
            report = score_suite(load_suite(path, args.env), coach, threshold=threshold,
                                 progress=not args.no_progress)
        finally:
            close_coach(coach)
    except (ValueError, OSError, ImportError, Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report_table(report))
    print(f"\n{report_summary(report, args.env)}")
    if args.out:
        write_results({"env_id": args.env, **report}, args.out)
        print(f"figures written to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import mappa_env

    if args.what == "envs":
        for env_id, spec in sorted(mappa_env.registry.items()):
            print(f"{env_id:16} {spec.description}")
        return 0
    from mappa_env.tasks import load_tasks

    for task in load_tasks("builtin", split=args.split):
        print(f"{task.id:44} {task.split:8} {task.task_type:15} {task.metric}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
