"""The credit-assignment benchmark (``coach-bench``) for the small LLM coaches against ``receipts``.

For each team's suite (recorded once by ``python -m mappa_env coach-bench``, re-used from
``results/coach-bench-<env>.json``), scores it with:

* ``receipts``: the rule coach, the reference row;
* ``hf``: the packaged SmolLM2-135M-Instruct in-process (``hf:smollm2``), greedy, with the score line forced
  (``force_score_line``: without it the model writes no valid score line, docs/coach.md) and replies of
  ``--max-new-tokens``;
* ``openai``: the same model behind ``transformers serve`` on loopback (started and stopped here), the
  score line forced by the server's sequence bias
  (:func:`mappa_env.coach.constrain.transformers_serve_extra_body`), the same reply cap.

Each coach gets a fresh response cache, so its time is its own. Prints one table (agent hit, step hit,
innocence, clean controls, unscored, minutes) and writes each coach's figures as JSON under ``--out-dir``.

Run: ``python benchmarks/coach_bench_llm.py [--envs mathchat-v0 dsbench-v0] [--coaches receipts hf openai]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from mappa_env.coach import close_coach, make_coach
from mappa_env.coach.bench import default_episodes_file, load_suite, play_suite, report_summary, score_suite
from mappa_env.evaluation import write_results
from mappa_env.hf_models import packaged_smollm2_dir
from mappa_env.local_server import transformers_serve


def coach_options(kind: str, max_new_tokens: int, cache_dir: Path, server: str | None) -> tuple[str, dict]:
    """The coach name and options of one row."""
    if kind == "receipts":
        return "receipts", {}
    if kind == "hf":
        return "hf:smollm2", {"force_score_line": True, "max_new_tokens": max_new_tokens, "cache_dir": str(cache_dir)}
    from transformers import AutoTokenizer

    from mappa_env.coach.constrain import transformers_serve_extra_body

    model_dir = packaged_smollm2_dir()
    # one request at a time: the server answers them one after another, so more in flight only wait
    # the server's sequence bias opens the reply with the score line: read it there (score_line "first")
    return f"openai:{model_dir}", {"base_url": server, "max_tokens": max_new_tokens, "max_in_flight": 1,
                                   "score_line": "first",
                                   "timeout_s": 900, "cache_dir": str(cache_dir),
                                   "extra_body": transformers_serve_extra_body(AutoTokenizer.from_pretrained(model_dir))}


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["mathchat-v0", "dsbench-v0"])
    parser.add_argument("--coaches", nargs="+", choices=["receipts", "hf", "openai"], default=["receipts", "hf", "openai"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the LLM coaches' reply cap")
    parser.add_argument("--out-dir", type=Path, default=Path("results/coach-bench-llm"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for env_id in args.envs:
        path = default_episodes_file(env_id)
        if not path.exists():
            print(f"recording the {env_id} suite into {path} ...", file=sys.stderr)
            write_results(play_suite(env_id, progress=True), path)
        episodes = load_suite(path, env_id)
        for kind in args.coaches:
            with contextlib.ExitStack() as stack:
                server = None
                if kind == "openai":
                    log_path = args.out_dir / "server.log"
                    server = stack.enter_context(transformers_serve(packaged_smollm2_dir(), log_path=log_path))
                cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coach-cache-")))
                name, options = coach_options(kind, args.max_new_tokens, cache, server)
                began = time.perf_counter()  # the model's loading counts (the server's start does not)
                coach = make_coach(name, **options)
                try:
                    report = score_suite(episodes, coach, progress=True)
                finally:
                    close_coach(coach)
                minutes = (time.perf_counter() - began) / 60
            write_results({"env_id": env_id, "minutes": minutes, "options": _printable(options), **report},
                          args.out_dir / f"{env_id}-{kind}.json")
            print(report_summary(report, env_id), f"({minutes:.1f} min)", file=sys.stderr)
            rows.append((kind, env_id, report, minutes))

    print(f"\nreply cap {args.max_new_tokens} tokens, greedy; score line forced for the LLM coaches\n")
    print("| coach | env | agent hit | step hit | innocence | clean controls | unscored actions | minutes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, env_id, report, minutes in rows:
        faults, controls = report["overall"]["faults"], report["overall"]["controls"]
        unscored = faults["unscored"] + (controls["unscored"] if controls else 0)
        print(f"| {report['coach'] if kind != 'openai' else 'openai: SmolLM2 (transformers serve)'} | {env_id} | "
              f"{pct(faults['agent_accuracy'])} | {pct(faults['step_accuracy'])} | {pct(faults['innocence'])} | "
              f"{pct(controls['clean'] if controls else None)} | {unscored} | {minutes:.1f} |")


def _printable(options: dict) -> dict:
    """The options as written into the JSON: the sequence bias is long and the cache a temporary directory."""
    shown = {k: v for k, v in options.items() if k not in ("cache_dir", "extra_body")}
    if "extra_body" in options:
        shown["extra_body"] = "transformers_serve_extra_body(tokenizer)"
    return json.loads(json.dumps(shown))


if __name__ == "__main__":
    main()
