"""export: the agents in ``final/`` load on another machine, by the snippet docs/training.md documents.

The snippet is read from the markdown file (the block after its ``tested:`` marker) and run as written, with
only the run directory and the agent name filled in: the docs and the test cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")

from mappa_env.hf_models import SMOLLM2_HUB_ID, base_reference, load_exported_base  # noqa: E402
from mappa_train.config import ModelConfig, PolicyConfig  # noqa: E402
from mappa_train.policy import TeamModel, export  # noqa: E402

AGENTS = ["modeler", "analyst"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
MARKER = "<!-- tested: tests/train/test_export.py runs this block as written, on a tiny-random export -->"


def documented_snippet(final: Path, agent: str) -> str:
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, f"docs/training.md lost the code block after {MARKER}"
    code = match.group(1)
    assert code.count('"runs/<name>/final"') == 1 and code.count('"<agent>"') == 1, "the snippet's placeholders changed"
    return code.replace('"runs/<name>/final"', repr(str(final))).replace('"<agent>"', repr(agent))


def trained_team(path: str = "tiny-random", agents: list[str] = AGENTS) -> TeamModel:
    """A team whose adapters are not the base (LoRA's B starts at zero) and differ from each other."""
    config = ModelConfig(path=path, dtype="float32", device="cpu", max_new_tokens=12)
    team = TeamModel(agents, config, PolicyConfig(topology="lora", lora_rank=4, lora_alpha=8), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for agent in agents:
            for parameter in team.trainable_parameters(agent):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return team


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids.to(next(model.parameters()).device)).logits.float().cpu()


def team_logits(team: TeamModel, agent: str | None, ids: torch.Tensor) -> torch.Tensor:
    with team.acting(agent) if agent else team.reference() as model:
        model.eval()
        return logits(model, ids)


def test_the_documented_snippet_run_elsewhere_loads_each_agent_with_the_logits_it_was_trained_to(tmp_path, monkeypatch):
    team = trained_team()
    export(team, tmp_path / "run" / "final")
    # another machine: the directory moved, an empty mappa cache (no converted SmolLM2), no hub, another cwd
    final = tmp_path / "elsewhere" / "final"
    shutil.move(tmp_path / "run" / "final", final)
    monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    for agent in AGENTS:
        namespace: dict = {}
        exec(compile(documented_snippet(final, agent), str(DOCS), "exec"), namespace)
        ids = namespace["inputs"]["input_ids"].cpu()
        loaded, trained = logits(namespace["model"], ids), team_logits(team, agent, ids)
        assert torch.allclose(loaded, trained, atol=1e-5), (agent, (loaded - trained).abs().max().item())
        # the check can tell: the base alone, and the other agent, are far from this agent's logits
        assert (team_logits(team, None, ids) - trained).abs().max() > 0.1
        other = next(a for a in AGENTS if a != agent)
        assert (team_logits(team, other, ids) - trained).abs().max() > 0.1
        assert namespace["out"].shape[1] > ids.shape[1] and isinstance(namespace["reply"], str)  # it replied
    assert not (tmp_path / "empty-cache" / "models").exists()  # nothing was rebuilt from the local model cache


def test_the_export_names_its_base_without_a_path_into_the_local_cache(tmp_path):
    team = trained_team()
    final = tmp_path / "final"
    export(team, final)
    for agent in AGENTS:
        config = json.loads((final / agent / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tiny-random"
    assert sorted(p.name for p in final.iterdir()) == sorted([*AGENTS, "base", "base_model.json"])
    record = json.loads((final / "base_model.json").read_text())
    assert {k: record[k] for k in ("name", "hub_id", "dtype", "weights")} == {
        "name": "tiny-random", "hub_id": None, "dtype": "float32", "weights": "base"}
    assert "load_exported_base" in record["how_to_load"]
    # the copied base is the reference policy, with none of the LoRA layers peft put into the training model
    tokenizer, base = load_exported_base(final, device="cpu")
    ids = torch.tensor([team.encode_prompt([{"role": "user", "content": "hello"}])])
    assert torch.allclose(logits(base, ids), team_logits(team, None, ids), atol=1e-5)
    assert not any("lora" in name for name, _ in base.named_parameters())


@pytest.mark.parametrize(("path", "hub_id"), [
    ("smollm2", SMOLLM2_HUB_ID),
    ("tiny-random", None),
    ("Qwen/Qwen3-4B", "Qwen/Qwen3-4B"),  # a hub id keeps its id
    ("models/my-model.gguf", None),
])
def test_a_base_is_named_by_its_hub_id_where_it_has_one_else_as_given(path, hub_id):
    reference = base_reference(path)
    assert reference["name"] == path and reference["hub_id"] == hub_id
    assert (reference["note"] is not None) == (path == "smollm2")  # the packaged GGUF is not the hub's weights


def test_a_local_directory_keeps_the_path_the_user_gave(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert base_reference("org/model") == {"name": "org/model", "hub_id": None, "note": None}


def test_an_export_without_its_base_record_says_what_is_missing(tmp_path):
    (tmp_path / "modeler").mkdir()
    with pytest.raises(FileNotFoundError, match="base_model.json is missing"):
        load_exported_base(tmp_path)


@pytest.mark.slow
def test_a_smollm2_adapter_names_the_hub_model_and_loads_on_the_packaged_base(tmp_path):
    team = trained_team("smollm2", ["modeler"])
    final = tmp_path / "final"
    export(team, final)
    config = json.loads((final / "modeler" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == SMOLLM2_HUB_ID
    assert sorted(p.name for p in final.iterdir()) == ["base_model.json", "modeler"]  # 540 MB: not copied
    record = json.loads((final / "base_model.json").read_text())
    assert record["name"] == "smollm2" and record["weights"] is None and "Q4_1" in record["note"]

    from peft import PeftModel

    tokenizer, base = load_exported_base(final, device="cpu")
    model = PeftModel.from_pretrained(base, final / "modeler").eval()
    ids = torch.tensor([team.encode_prompt([{"role": "user", "content": "Train a model on X_train.pkl."}])])
    trained = team_logits(team, "modeler", ids)
    assert torch.allclose(logits(model, ids), trained, atol=1e-4)
    assert (team_logits(team, None, ids) - trained).abs().max() > 0.1
