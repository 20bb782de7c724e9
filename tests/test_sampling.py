"""Sampling settings are declared once (backends/sampling.py): the page's sliders, the API
request and models.yaml all take the same bounds, and refuse the same values."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backends.base import GenParams
from chatcore.api.v1 import build_api
from chatcore.api.schema import ApiError, ChatRequest, parse_request
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.i18n import english
from chatcore.generation.manager import ModelManager
from backends.sampling import SamplingSettings, bounds, merge, stored
from chatcore.conversations.store import Store
from chatui.exports import ExportFiles
from chatui.chat_tab import build_chat_tab
from chatui.compare_tab import build_compare_tab
from chatui.sampling_controls import SettingsControls
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend

FIELDS = list(SamplingSettings.model_fields)
SLIDER_FIELDS = [f for f in FIELDS if f not in ("seed", "think")]  # a number box, a switch

# Every sampling slider on the Chat tab and each Compare pane, by elem_id: one per setting.
SLIDERS = {**{name.replace("_", "-"): name for name in SLIDER_FIELDS},
           **{f"compare-{name.replace('_', '-')}-{i}": name
              for name in SLIDER_FIELDS for i in range(4)}}
# The API's names for the settings: the schema's, but for the reply's length.
API_FIELDS = {**{name: name for name in FIELDS if name != "max_new_tokens"},
              "max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens"}
ENGLISH = english()
CONSTRAINTS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "type")


def entry(model_id: str = "fake", **defaults) -> ModelEntry:
    return ModelEntry(id=model_id, backend="llamacpp", path=__file__, context_length=256,
                      defaults=defaults)


@pytest.fixture()
def manager():
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=(entry(),), broken=())
    return ModelManager(registry, lambda _: ScriptedBackend("Paris is the capital"))


@pytest.fixture()
def page_config(manager, tmp_path) -> dict:
    """The Chat and Compare tabs as the browser receives them."""
    store = Store(tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Gradio on lambdas taking a request
            exports = ExportFiles(tmp_path / "exports")
            with gr.Blocks() as app:
                with gr.Tab("Chat"):
                    build_chat_tab(app, manager, store, "fake", exports, texts=english())
                with gr.Tab("Compare"):
                    build_compare_tab(app, manager, store, "fake", exports, texts=english())
        yield app.get_config_file()
    finally:
        store.close()


def schema_constraints(schema: dict) -> dict:
    """A field's own constraints, from its schema or the non-null branch of anyOf."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    assert len(branches) == 1, schema
    return {k: v for k, v in branches[0].items() if k in CONSTRAINTS}


def expected_slider(name: str) -> tuple:
    """The slider a setting should have, from SamplingSettings' JSON schema itself."""
    schema = SamplingSettings.model_json_schema()["properties"][name]
    low = schema.get("minimum", schema.get("slider_minimum"))
    return low, schema["maximum"], schema["step"]


# -- one declaration ---------------------------------------------------------------------

def test_bounds_read_the_schema_of_every_setting():
    for name in SLIDER_FIELDS:
        assert bounds(name) == expected_slider(name), name
    low, high, _ = bounds("seed")
    assert (low, high) == (0, 2**63 - 1)
    for name in FIELDS:  # the catalog's English help is the schema's own
        assert ENGLISH(f"sampling.{name}_info") == \
            SamplingSettings.model_fields[name].description, name
    with pytest.raises(KeyError, match="temprature"):
        bounds("temprature")


def test_every_page_slider_takes_its_range_label_and_help_from_the_schema(page_config):
    sliders = {c["props"]["elem_id"]: c["props"] for c in page_config["components"]
               if c["type"] == "slider"}
    assert set(sliders) == set(SLIDERS), "a sampling slider not built from the schema"
    for elem_id, name in SLIDERS.items():
        props = sliders[elem_id]
        assert (props["minimum"], props["maximum"], props["step"]) == bounds(name), elem_id
        assert props["label"] == ENGLISH(f"sampling.{name}"), elem_id
        assert props["info"] == ENGLISH(f"sampling.{name}_info"), elem_id
        assert props["value"] == getattr(SamplingSettings(), name), elem_id
    for name in SLIDER_FIELDS:  # each setting has a slider on the Chat tab
        assert name in SLIDERS.values()
    seed = next(c["props"] for c in page_config["components"]
                if c["props"].get("elem_id") == "seed")
    assert seed["label"] == ENGLISH("sampling.seed")
    assert seed["info"] == ENGLISH("sampling.seed_info")
    assert seed["precision"] == 0 and seed["value"] == -1


def test_the_api_request_has_the_same_bounds_and_help(tmp_path):
    ours = SamplingSettings.model_json_schema()["properties"]
    theirs = ChatRequest.model_json_schema()["properties"]
    for api_name, name in API_FIELDS.items():
        assert schema_constraints(theirs[api_name]) == schema_constraints(ours[name]), api_name
        assert theirs[api_name]["description"] == ours[name]["description"], api_name
        assert ChatRequest.model_fields[api_name].default is None, api_name


def test_models_yaml_defaults_are_the_sampling_settings():
    schema = ModelEntry.model_json_schema()
    reference = schema["properties"]["defaults"]
    target = reference.get("$ref") or reference["allOf"][0]["$ref"]
    defaults = schema["$defs"][target.rsplit("/", 1)[-1]]
    assert defaults == SamplingSettings.model_json_schema()
    assert isinstance(ModelEntry.model_fields["defaults"].default_factory(), SamplingSettings)


# -- the API refuses what the page and models.yaml refuse --------------------------------

def body(**fields) -> bytes:
    return json.dumps({"model": "fake", "messages": [{"role": "user", "content": "Hi"}],
                       **fields}).encode()


@pytest.mark.parametrize("field,value,message", [
    ("temperature", 3, "temperature: Input should be less than or equal to 2"),
    ("repetition_penalty", 5, "repetition_penalty: Input should be less than or equal to 2"),
    ("top_k", 1000, "top_k: Input should be less than or equal to 200"),
    ("max_tokens", 100000, "max_tokens: Input should be less than or equal to 8192"),
    ("max_completion_tokens", 100000,
     "max_completion_tokens: Input should be less than or equal to 8192"),
    ("top_p", 0, "top_p: Input should be greater than 0"),
    ("repetition_penalty", 0.1, "repetition_penalty: Input should be greater than or equal to 0.5"),
    ("seed", -1, "seed: Input should be greater than or equal to 0"),
    ("seed", 2**63, "seed: Input should be less than 9223372036854775808"),
    ("min_p", 1.5, "min_p: Input should be less than or equal to 1"),
    ("min_p", -0.1, "min_p: Input should be greater than or equal to 0"),
])
def test_an_out_of_range_api_value_is_a_400_naming_the_field_and_bound(field, value, message):
    with pytest.raises(ApiError) as caught:
        parse_request(body(**{field: value}))
    assert caught.value.status == 400
    assert caught.value.message == message
    assert caught.value.param == field


def test_the_served_api_answers_400_with_the_field_and_bound(manager):
    server = FastAPI()
    server.include_router(build_api(manager, None))
    reply = TestClient(server).post("/v1/chat/completions", content=body(temperature=3),
                                    headers={"content-type": "application/json"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"] == "temperature: Input should be less than or equal to 2"
    assert error["param"] == "temperature"


def test_api_settings_go_over_the_entrys_defaults():
    defaults = SamplingSettings(temperature=0.3, top_k=10, max_new_tokens=100, seed=5)
    request = parse_request(body(top_p=0.5, max_tokens=20, stop="END"))
    assert request.params(defaults) == GenParams(SamplingSettings(temperature=0.3, top_p=0.5, top_k=10, max_new_tokens=20, repetition_penalty=1.0, seed=5), stop=("END",))
    newer = parse_request(body(max_tokens=20, max_completion_tokens=30, temperature=0, seed=0))
    params = newer.params(defaults)
    assert (params.sampling.max_new_tokens, params.sampling.temperature, params.sampling.seed) == (30, 0.0, 0)
    # Every bound is reachable: the extremes pass.
    edges = parse_request(body(temperature=2, top_p=1, top_k=200, max_tokens=8192,
                               repetition_penalty=0.5, seed=2**63 - 1))
    assert edges.params(SamplingSettings()).sampling.max_new_tokens == 8192


# -- models.yaml ---------------------------------------------------------------------------

GOOD = """models:
  - id: good
    backend: llamacpp
    path: good.gguf
"""


@pytest.mark.parametrize("defaults,message", [
    ("{repetition_penalty: 5}",
     "field 'defaults.repetition_penalty': Input should be less than or equal to 2 (got 5)"),
    ("{top_k: 1000}", "field 'defaults.top_k': Input should be less than or equal to 200"),
    ("{max_new_tokens: 100000}",
     "field 'defaults.max_new_tokens': Input should be less than or equal to 8192"),
])
def test_models_yaml_with_an_out_of_range_default_is_refused_naming_the_entry(
        tmp_path: Path, defaults, message):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD + f"  - {{id: chatty, backend: llamacpp, path: x.gguf, "
                    f"defaults: {defaults}}}\n", encoding="utf-8")
    registry = load_registry(path)
    assert registry.ids == ["good"]
    (broken,) = registry.broken
    assert broken.id == "chatty"
    assert broken.reason.startswith(f"{path}: entry 2 (id 'chatty'): ")
    assert message in broken.reason


def test_the_shipped_models_yaml_is_within_the_bounds():
    registry = load_registry(SHIPPED_MODELS)
    assert not registry.broken
    assert all(isinstance(e.defaults, SamplingSettings) for e in registry.entries)


# -- merge and the page's values -----------------------------------------------------------

def test_merge_keeps_the_defaults_for_none_and_refuses_out_of_range():
    defaults = SamplingSettings(temperature=0.2, top_k=7, seed=11)
    merged = merge(defaults, temperature=None, top_k=None, seed=None, top_p=0.5)
    assert merged == SamplingSettings(temperature=0.2, top_k=7, seed=11, top_p=0.5)
    assert merge(defaults, temperature=0).temperature == 0.0  # 0 is a value, not "unset"
    assert defaults.top_p == 0.9  # the defaults are not changed
    for bad in ({"temperature": 3}, {"repetition_penalty": 5}, {"top_k": 1000},
                {"max_new_tokens": 0}, {"top_p": 0}, {"seed": -1}, {"temprature": 1}):
        with pytest.raises(ValidationError) as caught:
            merge(defaults, **bad)
        assert caught.value.errors()[0]["loc"] == (next(iter(bad)),)


def test_stored_settings_read_back_with_defaults_for_what_an_older_version_lacked():
    assert stored({"temperature": 0.2, "seed": 4}) == SamplingSettings(temperature=0.2, seed=4)
    # A field that no longer validates, or that is unknown, takes the default.
    assert stored({"temperature": 9, "typo": 1, "min_p": 0.5}) == SamplingSettings(min_p=0.5)
    assert stored(None) == SamplingSettings()


def controls() -> SettingsControls:
    with gr.Blocks():
        return SettingsControls(SamplingSettings(), texts=ENGLISH)


def values(**given) -> list:
    """The controls' values for the default settings, with `given` over them."""
    shown = dict(zip(FIELDS, SettingsControls.shown(SamplingSettings())))
    return [given.get(name, shown[name]) for name in FIELDS]


def test_page_controls_become_one_validated_value_and_show_it_back():
    read = controls().read(values(temperature=0.0, top_p=1.0, top_k=40.0, max_new_tokens=64.0,
                                  repetition_penalty=1.1, seed=-1, min_p=0.05))
    assert read == SamplingSettings(temperature=0.0, top_p=1.0, top_k=40, min_p=0.05,
                                    max_new_tokens=64, repetition_penalty=1.1, seed=None)
    assert isinstance(read.top_k, int) and isinstance(read.max_new_tokens, int)
    assert controls().read(values(seed=None)).seed is None
    assert controls().read(values(seed=42.0)).seed == 42
    assert controls().read(values(think="on", thinking_budget=50)).think is True
    every = SamplingSettings(temperature=0.35, top_p=0.8, top_k=7, min_p=0.1,
                             max_new_tokens=99, repetition_penalty=1.2, seed=1234, think=False,
                             thinking_budget=50)
    assert controls().read(SettingsControls.shown(every)) == every  # round trip, every field


@pytest.mark.parametrize("given,message", [
    ({"temperature": 3.0}, "Temperature (0 = greedy): Input should be less than or equal to 2"),
    ({"top_k": 1000}, "Top k (0 = off): Input should be less than or equal"),
    ({"max_new_tokens": 9000}, "Max new tokens: Input should be less than or equal to 8192"),
    ({"repetition_penalty": 5.0}, "Repetition penalty: Input should be less than or equal to 2"),
    ({"top_k": 40.5}, "Top k (0 = off): Input should be a valid integer"),
    ({"min_p": 1.5}, "Min p (0 = off): Input should be less than or equal to 1"),
])
def test_out_of_range_controls_are_refused_with_the_control_named(given, message):
    with pytest.raises(gr.Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        controls().read(values(**given))


def test_each_compare_pane_starts_from_its_own_models_defaults(manager, tmp_path):
    registry = ModelRegistry(path=SHIPPED_MODELS, broken=(), entries=(
        entry("cool", temperature=0.1, min_p=0.2), entry("warm", temperature=1.1)))
    two = ModelManager(registry, lambda _: ScriptedBackend("hi"))
    store = Store(tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with gr.Blocks() as app:
                build_compare_tab(app, two, store, "cool", ExportFiles(tmp_path / "x"),
                                  texts=ENGLISH)
        props = {c["props"].get("elem_id"): c["props"] for c in app.get_config_file()["components"]}
    finally:
        store.close()
    assert (props["compare-temperature-0"]["value"], props["compare-min-p-0"]["value"]) == (0.1, 0.2)
    assert (props["compare-temperature-1"]["value"], props["compare-min-p-1"]["value"]) == (1.1, 0.0)


