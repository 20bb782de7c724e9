"""What a token costs, end to end: real SmolLM2 replies (through Compare and Evaluate, as a
person makes them) and a scripted remote entry with a price. The Models tab and the
leaderboard show the cost per million tokens that hand arithmetic gives from the measured
times and the configured watts and price; the Evaluate report has both charts, its points
labelled with the models' names, and names the cheapest model not clearly worse."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from backends.sampling import SamplingSettings
from chatcore.conversations.store import Store
from chatcore.costs.book import CostBook
from chatcore.costs.power import PowerMeter
from chatcore.evaluate.ratings import quality_speed_figure
from chatcore.evaluate.runner import EvalRunner
from chatcore.evaluate.store import EvalStore
from chatcore.evaluate.value import cheapest_not_worse, quality_cost_figure
from chatcore.generation.manager import ModelManager
from backends.price import Price
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.i18n import english, load_texts
from chatui.compare_handlers import CompareHandlers
from chatui.cost_controls import CostWords
from chatui.evaluate_handlers import EvaluateHandlers
from chatui.exports import ExportFiles
from chatui.prompt_set_handlers import MINE
from tests.conftest import SAFETY_S, SHIPPED_MODELS
from tests.fakes import ScriptedBackend

ANNA = SimpleNamespace(session_hash="tab-31", username="anna")
WATTS, PRICE_PER_KWH = 35.0, 12.0  # PHP per kWh
CLOUD_INPUT, CLOUD_OUTPUT = 15.0, 60.0  # PHP per million tokens, the entry's price
SHORT = SamplingSettings(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def priced(smollm2, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("costs")
    entries = (ModelEntry(id="smollm2", name="SmolLM2", backend="llamacpp",
                          path=str(smollm2.model_path)),
               ModelEntry(id="cloud", name="Cloud", backend="openai",
                          base_url="http://127.0.0.1:9/v1",
                          price=Price(input=CLOUD_INPUT, output=CLOUD_OUTPUT, currency="PHP")))
    cloud = ScriptedBackend("Paris is the capital of France and a city on the Seine.")
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           lambda entry: smollm2 if entry.id == "smollm2" else cloud)
    store = Store(tmp / "data")
    book = CostBook(store, PowerMeter(root=tmp / "no-powercap"))
    manager.measure_with(book.record)  # as chatui/app.py does for every page
    exports = ExportFiles(tmp / "exports")
    evals = EvalStore(store)
    yield SimpleNamespace(
        manager=manager, store=store, book=book,
        compare=CompareHandlers(manager, store, exports, texts=english()),
        evaluate=EvaluateHandlers(manager, evals, EvalRunner(manager, evals), exports,
                                  texts=english(), costs=book),
        words=CostWords(manager, book, texts=english()))
    store.close()


def measured(store: Store) -> tuple[int, int, float, int, float]:
    """SmolLM2's totals as stored: replies, prompt tokens and seconds, output tokens and
    seconds."""
    with store.transaction() as db:
        return db.execute("SELECT replies, prompt_tokens, prompt_seconds, output_tokens,"
                          " decode_seconds FROM reply_speeds WHERE model = 'smollm2'").fetchone()


def by_hand(seconds: float, tokens: int) -> float:
    """PHP per million tokens: hours a million tokens take x kW x PHP per kWh."""
    return seconds / tokens * 1_000_000 / 3600 * (WATTS / 1000) * PRICE_PER_KWH


def amount(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_models_tab_and_leaderboard_show_costs_from_measured_time_and_set_prices(priced):
    compare = priced.compare
    saved = priced.words.save("PHP", PRICE_PER_KWH, str(WATTS), 0, 10_000)
    assert saved == "Saved: ₱12.00/kWh, 35 W."
    comparison = None
    for round_, winner in enumerate(("A", "B", "A")):
        updates = list(compare.send(f"What is the capital of France? ({round_})", comparison,
                                    False, "2", "", ["smollm2", "cloud", "smollm2", "smollm2"],
                                    [SHORT] * 4, request=ANNA))
        comparison = updates[-1][4]
        footers = [update["value"][-1]["content"] for update in updates[-1][:2]]
        assert all("for this reply</sub>" in f and "≈ ₱" in f for f in footers), footers
        compare.vote(winner, comparison, ANNA)
    replies, p_tokens, p_seconds, o_tokens, o_seconds = measured(priced.store)
    assert replies == 3 and o_tokens > 0 and p_tokens > 0
    output, input_ = by_hand(o_seconds, o_tokens), by_hand(p_seconds, p_tokens)

    lines = priced.words.lines().split("\n\n")
    local = re.fullmatch(r"\*\*SmolLM2\*\*: ≈ ₱([\d.,]+) per million output tokens, ₱([\d.,]+)"
                         r" per million input \(measured 3 replies with llamacpp on cpu, 35 W,"
                         r" set by you, ₱12\.00/kWh\)", lines[0])
    assert local, lines[0]
    # Two significant digits are shown: within 5% of the hand-computed figure.
    assert amount(local[1]) == pytest.approx(output, rel=0.051)
    assert amount(local[2]) == pytest.approx(input_, rel=0.051)
    assert lines[1] == ("**Cloud**: ≈ ₱60.00 per million output tokens, ₱15.00 per million "
                        "input (the entry's price)")

    rows = {row[1]: row for row in compare.leaderboard_rows(ANNA)}
    assert set(rows) == {"SmolLM2", "Cloud"} and rows["Cloud"][-1] == "₱60.00"
    assert amount(rows["SmolLM2"][-1].removeprefix("₱")) == pytest.approx(output, rel=0.051)
    api = {row["model"]: row for row in compare.api_leaderboard(ANNA)}
    assert api["smollm2"]["cost_per_million_output"] == pytest.approx(output, rel=1e-9)
    assert api["cloud"]["currency"] == "PHP"

    # The Filipino page says the same in its words, the figure with its source.
    fil = CostWords(priced.manager, priced.book, texts=load_texts("fil")).lines()
    assert "kada milyong token na sagot" in fil and "35 W, itinakda mo" in fil


@pytest.mark.slow
def test_evaluate_report_charts_quality_against_cost_and_speed_and_names_the_cheapest(priced):
    handlers = priced.evaluate
    rows = [["What is 2+2?", "math", "4"], ["Capital of France?", "facts", "Paris"],
            ["", "", ""]]
    handlers.sets.save_set(None, "Costs", rows, ANNA)
    picker, status = handlers.start_run(MINE + "Costs", "", ["smollm2", "cloud", None, None],
                                        [SHORT] * 4, request=ANNA)
    run_id = picker["value"]
    assert handlers.runner.wait(run_id, SAFETY_S), status
    votes = 0
    while (item := handlers.next_pair(run_id, ANNA)[-1]) is not None:
        # SmolLM2 wins the first prompt, Cloud the second, in both orders: the intervals
        # overlap, so neither is clearly worse.
        prompt, left, _ = item
        handlers.vote("A" if left == prompt % 2 else "B", item, run_id, ANNA)
        votes += 1
    assert votes == 2  # one pair per prompt
    results = handlers._results("anna", run_id)
    table = results.tables()[0]
    costs = handlers.run_costs(results)
    assert costs.currency == "PHP" and costs.per_million["Cloud"] == CLOUD_OUTPUT
    _, _, _, o_tokens, o_seconds = measured(priced.store)
    assert costs.per_million["SmolLM2"] == pytest.approx(by_hand(o_seconds, o_tokens))
    cheapest = min(costs.per_million, key=costs.per_million.get)
    assert cheapest_not_worse(table, costs).model == cheapest

    for figure in (quality_cost_figure(table, costs),
                   quality_speed_figure(table, results.speed(), results.memory())):
        labels = {text.get_text() for text in figure.axes[0].texts}
        assert labels == {"SmolLM2", "Cloud"}
    files, _ = handlers.export_report(run_id, ANNA)
    charts = [p for p in files["value"] if p.endswith(".png")]
    assert len(charts) == 2 and any(p.endswith("-cost.png") for p in charts)
    for chart in charts:
        with open(chart, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    report = open(next(p for p in files["value"] if p.endswith(".md")), encoding="utf-8").read()
    assert f"Cheapest not clearly worse than the best: **{cheapest}**" in report
    assert "PHP per M output tokens" in report and "Quality vs cost per token" in report
    with open(handlers.cost_plot(run_id, ANNA), "rb") as png:  # the page's, beside speed
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    _, _, note = handlers.ratings(run_id, ANNA)
    assert f"Cheapest not clearly worse than the best: **{cheapest}**" in note
