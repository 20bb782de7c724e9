"""Task, language and licence tags: from models.yaml (bad ones refused by entry and field),
from a GGUF's metadata, from the Hub's tags; and the filters over the Models tab, the Chat
picker and the Hub search (the real huggingface_hub client against tests/hub_server.py)."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from huggingface_hub import HfApi

from backends.model_tags import ModelTags, TagFilter, openness_of, tags_from_hub
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.i18n import english, load_texts
from chatcore.library.discovery import inspect_path
from chatcore.library.hub import Hub
from chatcore.library.model_files import suggest_entry
from chatcore.library.model_library import ModelLibrary
from chatui.chat_tab import filtered_models, model_choices
from chatui.library_handlers import LibraryHandlers
from chatui.model_filters import language_codes, tag_filter
from chatui.models_tab import COLUMNS, ModelsHandlers
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend
from tests.hub_server import HubServer

CODER, TAGALOG, MEDIC = "coder/tiny-coder-GGUF", "pinoy/tiny-tagalog-GGUF", "med/tiny-med-GGUF"
CARDS = {
    CODER: "license: mit\nlanguage: [en]\ntags: [code]\npipeline_tag: text-generation\n",
    TAGALOG: "license: llama2\nlanguage: [tl]\ntags: [conversational]\n"
             "pipeline_tag: text-generation\n",
    MEDIC: "license: apache-2.0\nlanguage: [en, fr]\ntags: [medical, biology]\n",
}


# -- the registry ---------------------------------------------------------------------------
def test_tags_in_models_yaml_and_bad_ones_refused_by_entry_and_field(tmp_path: Path):
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - {id: ok, backend: llamacpp, path: a.gguf,\n"
        "     tags: {tasks: [code, chat], languages: [EN, tl], license: Apache-2.0}}\n"
        "  - {id: typo, backend: llamacpp, path: a.gguf, tags: {tasks: [cod]}}\n"
        "  - {id: words, backend: llamacpp, path: a.gguf, tags: {languages: [English]}}\n"
        "  - {id: spelled, backend: llamacpp, path: a.gguf, tags: {licence: mit}}\n"
        "  - {id: long, backend: llamacpp, path: a.gguf, tags: {license: " + "x" * 65 + "}}\n"
        "  - {id: says, backend: llamacpp, path: a.gguf,\n"
        "     tags: {license: my-own, openness: open-weights}}\n")
    registry = load_registry(models)
    ok = registry.get("ok").tags
    assert (ok.tasks, ok.languages, ok.license, ok.open_as) == \
        (("code", "chat"), ("en", "tl"), "apache-2.0", "osi")
    assert registry.get("says").tags.open_as == "open-weights"  # the entry's word wins
    reasons = {b.id: b.reason for b in registry.broken}
    assert reasons["typo"] == (
        f"{models}: entry 2 (id 'typo'): field 'tags.tasks': unknown task 'cod'; known tasks: "
        "chat, code, math, medical, reasoning, translation (got ['cod'])")
    assert "entry 3 (id 'words'): field 'tags.languages': 'english' is not a language code" \
        in reasons["words"]
    assert "entry 4 (id 'spelled'): field 'tags.licence': unknown field" in reasons["spelled"]
    assert "entry 5 (id 'long'): field 'tags.license': String should have at most 64" \
        in reasons["long"]


def test_the_shipped_catalog_tags_every_entry_and_has_the_lessons_models():
    registry = load_registry(SHIPPED_MODELS)
    assert registry.broken == ()
    assert all(e.tags.tasks and e.tags.license for e in registry.entries)
    olmo = registry.get("olmo-2-7b-instruct-q4")
    assert olmo.tags.open_as == "osi" and olmo.repo and olmo.file
    assert registry.get("llama-2-7b-chat-q4").tags.open_as == "open-weights"
    assert registry.get("biomistral-7b-q4").tags.tasks == ("medical",)
    assert "ja" in registry.get("elyza-japanese-llama-2-7b-instruct-q4").tags.languages
    assert openness_of("llama3.1") == "open-weights" and openness_of("wtfpl") == "unknown"


# -- a GGUF's metadata ------------------------------------------------------------------------
def tagged_gguf(path: Path, tagged: bool = True) -> Path:
    """A small GGUF whose metadata says code and chat, en and tl, MIT (untagged: MIT only)."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_context_length(256)
    if tagged:
        writer.add_tags(["code", "conversational", "text-generation", "gguf"])
        writer.add_languages(["en", "tl", "not a code"])
    writer.add_license("MIT")
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_tensor("token_embd.weight", np.zeros((4, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tags_are_read_from_a_gguf_and_kept_in_the_entry_made_for_it(tmp_path: Path):
    found = inspect_path(tagged_gguf(tmp_path / "coder.gguf"))
    assert found.problem is None
    assert found.tags == ModelTags(tasks=("code", "chat"), languages=("en", "tl"),
                                   license="mit")
    raw, _ = suggest_entry(found, "coder")
    assert raw["tags"] == {"tasks": ["code", "chat"], "languages": ["en", "tl"],
                           "license": "mit"}
    assert ModelEntry.model_validate(raw).tags.open_as == "osi"


# -- the Models tab and the Chat picker ---------------------------------------------------------
def tagged_manager() -> ModelManager:
    tags = {"coder": ModelTags(tasks=("code", "chat"), languages=("en",), license="mit"),
            "talker": ModelTags(tasks=("chat",), languages=("tl",), license="llama2"),
            "plain": ModelTags()}
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=tuple(
        ModelEntry(id=i, name=i.title(), backend="llamacpp", path=__file__, tags=t)
        for i, t in tags.items()), broken=())
    return ModelManager(registry, lambda e: ScriptedBackend(), budget=MemoryBudget({"cpu": 10**9}))


def row_ids(rows: list[list[str]]) -> list[str]:
    return [dict(zip(COLUMNS, row))["Model (id)"].split(" (")[-1].rstrip(")") for row in rows]


def test_models_tab_filtered_by_task_shows_only_those_tagged_so():
    manager = tagged_manager()
    handlers = ModelsHandlers(manager, texts=english())
    rows, picker = handlers.filtered("code", "", "")
    assert row_ids(rows) == ["coder"]
    assert picker["choices"] == [("Coder", "coder")] and picker["value"] == "coder"
    assert row_ids(handlers.refresh("code", "", "")[0]) == ["coder"]  # the timer keeps it
    assert row_ids(handlers.filtered("chat", "", "")[0]) == ["coder", "talker"]
    assert row_ids(handlers.filtered("", "fil", "")[0]) == ["talker"]  # Filipino finds tl
    assert row_ids(handlers.filtered("", "", "osi")[0]) == ["coder"]
    assert row_ids(handlers.filtered("", "", "")[0]) == ["coder", "talker", "plain"]
    assert handlers.filtered("medical", "", "")[1]["choices"] == []
    details = dict(zip(COLUMNS, handlers.filtered("code", "", "")[0][0]))["Details"]
    assert "Code, Chat · en · mit · open source (OSI)" in details


def test_chat_picker_filtered_by_task_keeps_the_chosen_model_when_it_matches():
    manager = tagged_manager()
    texts = english()
    assert [i for _, i in model_choices(manager, texts=texts, only=TagFilter(task="code"))] \
        == ["coder"]
    kept = filtered_models(manager, "chat", "", "", "talker", texts=texts)
    assert [i for _, i in kept["choices"]] == ["coder", "talker"] and kept["value"] == "talker"
    moved = filtered_models(manager, "code", "", "", "talker", texts=texts)
    assert [i for _, i in moved["choices"]] == ["coder"] and moved["value"] == "coder"
    # a value no list offers (an API caller's) filters nothing rather than hiding everything
    assert tag_filter("nonsense", "xx", "free") == TagFilter()


def test_an_optional_picker_left_empty_stays_empty_when_the_filter_changes():
    """Evaluate's third and fourth candidates are optional: the filter narrows their lists
    but does not fill them; a chosen model that no longer matches moves to one that does."""
    manager = tagged_manager()
    empty = filtered_models(manager, "code", "", "", None, texts=english(), optional=True)
    assert [i for _, i in empty["choices"]] == ["coder"] and empty["value"] is None
    moved = filtered_models(manager, "code", "", "", "talker", texts=english(), optional=True)
    assert moved["value"] == "coder"


def test_every_model_picker_of_chat_compare_and_evaluate_follows_its_tabs_filter(tmp_path):
    """One way to narrow a model list: each picker of each page is an output of its own
    tab's task / language / licence controls and of its own opening (focus)."""
    from chatcore.conversations.store import Store
    from chatui.app import build_app
    from chatui.exports import ExportFiles

    store = Store(tmp_path)
    try:
        blocks = build_app(tagged_manager(), store, "coder", ExportFiles(tmp_path / "exports"))
        by_id: dict[str, list[int]] = {}
        for block in blocks.blocks.values():
            if getattr(block, "elem_id", None):
                by_id.setdefault(block.elem_id, []).append(block._id)
        for prefix, pickers in (("chat-filter", ["model", "answer-model"]),
                                ("compare-filter", [f"compare-model-{i}" for i in range(4)]),
                                ("eval-filter", [f"eval-model-{i}" for i in range(4)])):
            for name in pickers:
                for page, picker in enumerate(by_id[name]):  # English, then Filipino
                    fed_by = [{i._id for i in fn.inputs} for fn in blocks.fns.values()
                              if [o._id for o in fn.outputs] == [picker]]
                    for control in ("task", "language", "openness"):
                        source = by_id[f"{prefix}-{control}"][page]
                        assert any(source in inputs for inputs in fed_by), \
                            f"{name} (page {page}) does not follow {prefix}-{control}"
    finally:
        store.close()


def test_the_filipino_page_lists_tagalog_and_filipino_first():
    assert language_codes(load_texts("fil"))[:2] == ["tl", "fil"]
    assert language_codes(english())[0] == "en"


# -- the Hub search -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tagged_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagged-hub")
    for repo_id, card in CARDS.items():
        folder = root / repo_id
        folder.mkdir(parents=True)
        tagged_gguf(folder / "tiny-Q8_0.gguf")
        (folder / "README.md").write_text(f"---\n{card}---\n# {repo_id}\n")
    with HubServer(root) as server:
        yield server


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_hub_search_filters_by_task_and_language(tagged_hub: HubServer, tmp_path, online):
    hub = Hub(endpoint=tagged_hub.endpoint, token=False, timeout=30, cache_dir=tmp_path)
    ids = lambda **kw: sorted(r.repo_id for r in hub.search("", **kw))  # noqa: E731
    assert ids() == sorted(CARDS)
    assert ids(task="code") == [CODER]
    assert ids(task="chat") == [TAGALOG]  # the Hub marks chat models "conversational"
    assert ids(language="tl") == [TAGALOG]
    assert ids(task="medical", language="fr") == [MEDIC]
    assert ids(task="code", language="tl") == []
    found = {r.repo_id: r.tags for r in hub.search("tiny")}
    assert found[CODER] == ModelTags(tasks=("code",), languages=("en",), license="mit")
    assert found[TAGALOG].open_as == "open-weights" and found[MEDIC].open_as == "osi"
    assert found[MEDIC].tasks == ("medical",) and found[MEDIC].languages == ("en", "fr")
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        hub.search("", task="poetry")


def test_the_test_hub_answers_filters_as_the_real_client_asks(tagged_hub: HubServer, online):
    api = HfApi(endpoint=tagged_hub.endpoint, token=False)
    assert [m.id for m in api.list_models(filter=["code"])] == [CODER]
    assert [m.id for m in api.list_models(filter=["gguf", "tl"])] == [TAGALOG]
    assert sorted(m.id for m in api.list_models(pipeline_tag="text-generation")) == \
        sorted([CODER, TAGALOG])
    [medic] = api.list_models(filter="medical", cardData=True)
    assert medic.card_data.language == ["en", "fr"] and medic.card_data.license == "apache-2.0"
    assert "license:apache-2.0" in medic.tags and medic.pipeline_tag is None


def test_hub_search_on_the_page_filters_and_shows_tags(tagged_hub: HubServer, tmp_path, online):
    manager = ModelManager(load_registry(SHIPPED_MODELS), lambda e: ScriptedBackend(),
                           budget=MemoryBudget({"cpu": 10**9}))
    hub = Hub(endpoint=tagged_hub.endpoint, token=False, timeout=30, cache_dir=tmp_path)
    library = ModelLibrary(manager, SHIPPED_MODELS, tmp_path / "data" / "models.yaml",
                           hub=hub, env={}, home=tmp_path / "home")
    handlers = LibraryHandlers(library, texts=load_texts("fil"))
    picker, note = handlers.hub_search("", "GGUF", "", "tl")
    assert [value for _, value in picker["choices"]] == [TAGALOG]
    assert "Pakikipag-usap · tl · llama2 · bukas na weights lamang" in picker["choices"][0][0]
    picker, note = handlers.hub_search("tiny", "GGUF", "code", "")
    assert [value for _, value in picker["choices"]] == [CODER]
    empty, refused = handlers.hub_search("", "GGUF", "", "")
    assert empty["choices"] == [] and "pick a task or a language" in refused


def test_a_download_takes_its_tags_from_the_file_then_the_hubs_card(tagged_hub: HubServer,
                                                                    tmp_path, online):
    manager = ModelManager(load_registry(SHIPPED_MODELS), lambda e: ScriptedBackend(),
                           budget=MemoryBudget({"cpu": 10**9}))
    hub = Hub(endpoint=tagged_hub.endpoint, token=False, timeout=30, cache_dir=tmp_path)
    library = ModelLibrary(manager, SHIPPED_MODELS, tmp_path / "data" / "models.yaml",
                           hub=hub, env={}, home=tmp_path / "home")
    assert hub.repo_tags(MEDIC) == ModelTags(tasks=("medical",), languages=("en", "fr"),
                                             license="apache-2.0")
    # the file says only its licence: the tasks and languages come from the repo's card
    library.register_download(MEDIC, "plain.gguf",
                              tagged_gguf(tmp_path / "plain.gguf", tagged=False))
    [added] = [e for e in manager.registry.entries if e.repo == MEDIC]
    assert added.tags == ModelTags(tasks=("medical",), languages=("en", "fr"), license="mit")


def test_the_api_lists_tags_and_filters_by_them():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from chatcore.api.v1 import build_api

    app = FastAPI()
    app.include_router(build_api(tagged_manager(), None))
    client = TestClient(app)
    data = client.get("/v1/models", params={"task": "code"}).json()["data"]
    assert [m["id"] for m in data] == ["coder"]
    assert data[0]["tags"] == {"tasks": ["code", "chat"], "languages": ["en"],
                               "license": "mit", "openness": "osi"}
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == \
        ["coder", "talker", "plain"]
    assert [m["id"] for m in client.get("/v1/models?language=tl").json()["data"]] == ["talker"]
    bad = client.get("/v1/models", params={"task": "poetry"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("unknown task 'poetry'; expected chat, ")
