"""The openai: team speaks the chat completions protocol to a server on loopback.

The server here is a stand-in that answers like the scripted team (this tests the client plumbing:
messages sent verbatim, replies used as actions, errors surfaced). Tests against a real model server
(llama.cpp serving SmolLM2) arrive with the LLM coach, which needs the same server.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import mappa_env
from mappa_env.evaluation import run_episode
from mappa_env.local_server import free_port
from mappa_env.policies import PolicyError, make_policy
from mappa_env.policies.scripted import ScriptedTeam
from mappa_env.tasks import load_tasks

ROLE_BY_TITLE = {"Data Engineer": "data_engineer", "Modeler": "modeler", "Analyst": "analyst"}


class ChatHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        messages = body["messages"]
        role = next(r for title, r in ROLE_BY_TITLE.items() if f"Your role: {title}." in messages[0]["content"])
        obs = {"text": "\n".join(m["content"] for m in messages)}
        reply = ScriptedTeam().act(role, obs, {"messages": messages})
        payload = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    ChatHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_team_plays_an_episode_through_the_chat_protocol(chat_server):
    policy = make_policy("openai:stand-in", base_url=chat_server, api_key="test")
    env = mappa_env.make("dsbench-v0", split="heldout")
    try:
        task_id = next(t.id for t in load_tasks("builtin", split="heldout") if t.task_type == "classification")
        result = run_episode(env, policy, seed=0, task_id=task_id)
    finally:
        env.close()
    assert result["outcome"]["valid"], result["outcome"]["reason"]
    sent = ChatHandler.requests
    assert len(sent) == 6 and all(r["model"] == "stand-in" for r in sent)
    # the second request of the data engineer carries its first reply and the tool output, verbatim
    de_second = sent[1]["messages"]
    assert [m["role"] for m in de_second] == ["system", "user", "assistant", "user"]
    assert de_second[2]["content"] == result["agents"]["data_engineer"]["steps"][0]["action"]


def test_unreachable_endpoint_raises_a_clear_error():
    port = free_port()  # a port nobody listens on
    policy = make_policy("openai:any", base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout_s=5)
    with pytest.raises(PolicyError, match="OPENAI_BASE_URL"):
        policy.act("data_engineer", {"text": ""}, {"messages": [{"role": "user", "content": "hi"}]})


def test_unknown_policy_names_are_rejected():
    with pytest.raises(ValueError, match="valid: scripted"):
        make_policy("gpt")
