"""Cost settings and prices are bounded with the field and unit named; the defaults follow
the page's language until saved once; the power source is named; the arithmetic is the
stated one; every finished reply through the manager is timed into the store."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from backends.base import GenParams
from backends.sampling import SamplingSettings
from chatcore.conversations.store import Store
from chatcore.costs.book import CostBook, per_million
from chatcore.costs.power import DEFAULT_WATTS, PowerMeter
from chatcore.costs.settings import CostSettingError, CostSettings, parse_settings
from chatcore.costs.words import money
from chatcore.generation.manager import ModelManager
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.i18n import english, load_texts
from chatui.chat_handlers import ChatHandlers
from chatui.cost_controls import CostWords
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend, reply_chunks


@pytest.mark.parametrize("fields, message", [
    (("PHP", 12, "-5"), "watts: -5.0 is out of bounds; give 0 to 5,000 W"),
    (("PHP", 1e6), "price_per_kwh: 1000000.0 is out of bounds; give 0 to 1,000 PHP/kWh"),
    (("XYZ", 12), "currency: unknown currency code 'XYZ'"),
    (("USD", "cheap"), "price_per_kwh: 'cheap' is not a number"),
    (("USD", 0.2, "", -1), "hardware_cost: -1.0 is out of bounds; give 0 to 100,000,000 USD"),
    (("USD", 0.2, "", 10, 0), "hardware_hours: 0.0 is out of bounds; give 1 to 1,000,000 h"),
])
def test_bad_settings_are_refused_naming_the_field_and_unit(fields, message):
    with pytest.raises(CostSettingError) as refused:
        parse_settings(*fields)
    assert str(refused.value).startswith(message)


def test_the_page_says_a_refusal_in_its_language_and_saves_nothing(tmp_path):
    store = Store(tmp_path)
    manager = ModelManager(load_registry(SHIPPED_MODELS), lambda e: ScriptedBackend())
    book = CostBook(store, PowerMeter(root=tmp_path / "none"))
    en = CostWords(manager, book, texts=english())
    assert en.save("PHP", 12, "-5", 0, 10_000) == \
        "⚠️ Power draw: -5.0 is out of bounds; give 0 to 5,000 W."
    fil = CostWords(manager, book, texts=load_texts("fil"))
    assert fil.save("XYZ", 12, "", 0, 10_000) == \
        "⚠️ Pera: hindi kilalang code ng pera na XYZ."
    assert book.settings("en").saved is False


def test_defaults_follow_the_page_language_until_saved_once(tmp_path):
    store = Store(tmp_path)
    book = CostBook(store)
    assert (book.settings("fil").currency, book.settings("fil").price_per_kwh) == ("PHP", 12.0)
    assert (book.settings("en").currency, book.settings("en").price_per_kwh) == ("USD", 0.15)
    book.save(parse_settings("EUR", 0.3, "60"))
    for language in ("en", "fil"):
        assert book.settings(language) == CostSettings("EUR", 0.3, 60.0, saved=True)


def test_a_price_in_models_yaml_is_bounded_and_for_remote_entries_only(tmp_path):
    models = tmp_path / "models.yaml"
    remote = "backend: openai, base_url: 'http://127.0.0.1:9/v1'"
    models.write_text(f"""models:
  - {{id: ok, {remote}, price: {{input: 0.15, output: 0.6}}}}
  - {{id: negative, {remote}, price: {{input: 1, output: -2}}}}
  - {{id: coin, {remote}, price: {{input: 1, output: 2, currency: XBT}}}}
  - {{id: local, backend: llamacpp, path: x.gguf, price: {{input: 1, output: 2}}}}
""")
    registry = load_registry(models)
    ok = registry.get("ok")
    assert (ok.price.input, ok.price.output, ok.price.currency) == (0.15, 0.6, "USD")
    reasons = {b.id: b.reason for b in registry.broken}
    assert "field 'price.output': Input should be greater than or equal to 0" in \
        reasons["negative"]
    assert "field 'price.currency': unknown currency code" in reasons["coin"]
    assert "'price' applies to backend openai only" in reasons["local"]


def test_the_power_source_is_named(tmp_path):
    assert PowerMeter(root=tmp_path).read(None).source == "default"
    assert PowerMeter(root=tmp_path).read(None).watts == DEFAULT_WATTS
    assert PowerMeter(root=tmp_path).read(80.0) == PowerMeter(root=tmp_path).read(80.0)
    assert PowerMeter(root=tmp_path).read(80.0).source == "set"
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("1000000")
    (zone / "max_energy_range_uj").write_text("262143328850")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone: inside its package, not added
    assert PowerMeter(root=tmp_path).read(None).source == "rapl"


def test_the_cost_per_million_is_time_times_power_times_price_plus_hardware():
    settings = CostSettings("PHP", 10.0, 100.0, hardware_cost=3600, hardware_hours=1000)
    # 0.01 s a token: a million take 2.78 h, at 0.1 kW x ₱10 + ₱3.60 an hour of hardware.
    assert per_million(0.01, 100.0, settings) == pytest.approx(1e4 / 3600 * (1.0 + 3.6))
    assert per_million(None, 100.0, settings) is None


def test_amounts_keep_two_significant_digits_below_one():
    texts = english()
    assert [money(a, "PHP", texts) for a in (0.004, 0.01234, 1.5, 1234.0, 0)] == \
        ["₱0.0040", "₱0.012", "₱1.50", "₱1,234", "₱0"]


def test_every_finished_reply_through_the_manager_is_timed_into_the_store(tmp_path):
    entry = ModelEntry(id="m", name="M", backend="llamacpp", path=__file__)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           lambda e: ScriptedBackend("one two three four five", delay=0.01))
    book = CostBook(Store(tmp_path), PowerMeter(root=tmp_path / "none"))
    manager.measure_with(book.record)
    params = GenParams(SamplingSettings(max_new_tokens=8))
    for _ in range(2):
        list(reply_chunks(manager, "m", [], params, threading.Event()))
    speed = book.speeds.speed("m", "llamacpp")
    assert (speed.replies, speed.output_tokens, speed.device) == (2, 8, "cpu")
    assert speed.decode_seconds > 0
    cost = book.cost(entry, book.settings("fil"))
    assert cost.source == "measured" and cost.watts_source == "default"
    assert cost.output_per_million == pytest.approx(
        per_million(speed.decode_seconds / 8, DEFAULT_WATTS, book.settings("fil")))


def test_a_chat_reply_says_what_it_cost_live_and_when_read_back(tmp_path):
    entry = ModelEntry(id="m", name="M", backend="llamacpp", path=__file__)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           lambda e: ScriptedBackend("Paris is the capital", delay=0.01))
    store = Store(tmp_path)
    manager.measure_with(CostBook(store, PowerMeter(root=tmp_path / "none")).record)
    chat = ChatHandlers(manager, store, texts=load_texts("fil"))
    who = SimpleNamespace(session_hash="tab-5", username="")
    shown, _, conversation_id, _ = list(chat.send(
        "Kabisera ng France?", None, False, "m", "",
        SamplingSettings(temperature=0.0, max_new_tokens=16), request=who))[-1]
    cost = chat.costs.cost("m")
    stored = store.get_conversation("", conversation_id).messages[-1]
    amount = money(cost.of_reply(stored.prompt_tokens, stored.completion_tokens), "PHP",
                   load_texts("fil"))
    note = f"≈ {amount} para sa sagot na ito"
    assert shown[-1]["content"].endswith(f" · {note}</sub>")
    assert chat.display("", conversation_id)[-1].footer.endswith(f" · {note}")
