"""Coached actions per second against an endpoint of fixed latency, by in-flight limit.

An OpenAI-compatible endpoint on loopback answers every request after exactly ``--latency`` seconds with
a valid score line. ``OpenAICoach`` (cache off) scores ``--requests`` distinct actions at once through
``ascore``; with ``max_in_flight = k`` the ideal rate is ``k / latency`` actions per second. Target: at
16 in flight, at least 0.8 × ideal. One table, measured in one run.

Run: ``python benchmarks/coach_throughput.py [--latency 0.1] [--requests 128]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mappa_env.coach import CoachRequest, OpenAICoach, RoleInfo
from mappa_env.records import StepRecord
from mappa_env.envs.dsbench.roles import ROLES


def serve_fixed_latency(latency_s: float, port_queue) -> None:
    """A chat completions endpoint that sleeps ``latency_s`` then answers with a score (runs in its own
    process, so its threads do not compete with the coach for the interpreter lock)."""
    reply = json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "fixed",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Fine.\nPROCESS_SCORE: 7"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020},
    }).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections, as with real providers
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the listen backlog: the default 5 drops bursts of new connections

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def requests(n: int) -> list[CoachRequest]:
    team = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in ROLES)
    return [
        CoachRequest(
            env_id="dsbench-v0", task_id=f"bench/{i}", task_type="regression", role_instructions="train a model",
            team=team, task_description="Predict the price.", observation="### user\n" + "context " * 300,
            step=StepRecord(agent="modeler", action_index=0, action="```python\nfit()\n```", code="fit()", status="ok",
                            stdout="done", workspace_after={"model.pkl": 100}, files_changed=("model.pkl",),
                            ends_stage=False),
        )
        for i in range(n)
    ]


def actions_per_second(base_url: str, limit: int, batch: list[CoachRequest]) -> float:
    coach = OpenAICoach("fixed", base_url=base_url, cache_dir=None, max_in_flight=limit)
    coach.score(batch[0])  # start the loop and open a connection outside the timed part

    async def score_all():
        return await asyncio.gather(*(coach.ascore(r) for r in batch))

    start = time.perf_counter()
    verdicts = asyncio.run(score_all())
    elapsed = time.perf_counter() - start
    coach.close()
    assert all(v.score == 7.0 for v in verdicts), "the benchmark endpoint's replies were not scored"
    return len(batch) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="endpoint latency in seconds")
    parser.add_argument("--requests", type=int, default=128, help="actions scored per measurement")
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args = parser.parse_args()

    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_fixed_latency, args=(args.latency, ports), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    print(f"endpoint latency {args.latency * 1000:.0f} ms, {args.requests} actions per row\n")
    print("| max_in_flight | actions/s | ideal | share of ideal |\n|---:|---:|---:|---:|")
    for limit in args.limits:
        rate = actions_per_second(base_url, limit, requests(args.requests))
        ideal = limit / args.latency
        print(f"| {limit} | {rate:.1f} | {ideal:.1f} | {rate / ideal:.2f} |")
    server.terminate()


if __name__ == "__main__":
    main()
