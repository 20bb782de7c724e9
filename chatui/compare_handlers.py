"""The Compare tab's callbacks: one prompt to every pane at once, votes, the leaderboard."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import gradio as gr

from backends.base import BackendError, Chunk, GenParams
from chatcore.conversations.attachments import AttachmentStore
from chatcore.compare.comparison import MAX_PANES, MIN_PANES, Comparison, Round
from chatcore.generation.context import title_from
from chatcore.i18n import Texts
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.compare.ratings import MIN_GAMES_FOR_INTERVAL, Standing, leaderboard
from chatcore.generation.replies import ReplyRequest
from backends.sampling import SamplingSettings
from chatcore.conversations.store import Store
from chatcore.compare.votes import VoteStore, all_battles, votes_to_csv, votes_to_json
from chatcore.conversations.service import stored_reply
from chatui.chat_handlers import UPDATE_INTERVAL_S, session_key, user_of
from chatui.inspector_text import inspector_details, prompt_hidden
from chatui.conversations import file_slug
from chatui.exports import ExportFiles
from chatui.stop_registry import StopRegistry
from chatcore.costs.book import CostBook
from chatui.cost_controls import CostWords
from chatui.transcript import Turn, chatbot_messages, live_turn, model_name, turns_from

log = logging.getLogger(__name__)

# The leaderboard's columns, as ids: each header is the catalog's `compare.column.<id>`.
LEADERBOARD_COLUMNS = ["rank", "model", "rating", "interval", "win_rate", "wins", "losses",
                       "ties", "votes"]

def fenced(text: str, language: str = "text") -> str:
    """A Markdown code block that a prompt's own ``` fences cannot close."""
    return f"~~~~{language}\n{text}\n~~~~"


def compare_key(request: gr.Request | None) -> str:
    """Stop on the Compare tab ends the comparison, not a reply on the Chat tab."""
    return session_key(request) + ":compare"


class CompareHandlers:
    def __init__(self, manager: ModelManager, store: Store, exports: ExportFiles,
                 stops: StopRegistry | None = None, *, texts: Texts,
                 costs: CostBook | None = None) -> None:
        self.texts = texts
        self.manager = manager
        self.store = store
        self.attachments = AttachmentStore(store)
        self.votes = VoteStore(store)
        self.exports = exports
        self.stops = stops or StopRegistry()
        self.costs = CostWords(manager, costs or CostBook(store), texts=texts)

    def model_name(self, model_id: str) -> str:
        return model_name(self.manager.registry, model_id)

    # -- a round -------------------------------------------------------------------------
    def send(self, message: str, comparison: Comparison | None, blind: bool, count: float,
             system: str, models: Sequence[str], settings: Sequence[SamplingSettings],
             attachments: list[int] | None = None,
             request: gr.Request = None) -> Iterator[tuple]:
        """`models` and `settings`: every pane's, shown or not (the first `count` are)."""
        text = (message or "").strip()
        if not text and attachments:
            text = self.texts("compare.attached_prompt")
        if not text:
            yield self._outputs(comparison, None, message)
            return
        setups = self._setups(int(count), models, settings)
        if comparison is None:
            comparison = Comparison.start(setups, system=system or "", blind=bool(blind))
        else:
            comparison.system = system or ""
            if comparison.revealed:  # a pane's model can change between rounds
                for pane, (model_id, params) in zip(comparison.panes, setups):
                    pane.model_id, pane.params = model_id, params
        comparison.attachments += list(attachments or [])
        yield from self._round(comparison, text, compare_key(request), user_of(request))

    def _setups(self, count: int, models: Sequence[str],
                settings: Sequence[SamplingSettings]) -> list[tuple[str, GenParams]]:
        count = max(MIN_PANES, min(MAX_PANES, count))
        return [(models[index], GenParams(settings[index])) for index in range(count)]

    def _round(self, comparison: Comparison, text: str, key: str,
               user: str = "") -> Iterator[tuple]:
        panes = comparison.panes
        round_ = Round.begin(text, len(panes))
        # One attachment goes to every pane, each fitted to that model's context.
        grounding = self.attachments.grounding(user, comparison.attachments, text)
        requests = [ReplyRequest(p.model_id, comparison.prompt_for(i, text), p.params,
                                 grounding=grounding, user=user) for i, p in enumerate(panes)]
        turns = [Turn("assistant", "") for _ in panes]
        cancel = self.stops.begin(key)
        try:
            with self.manager.start(requests, cancel) as replies:
                yield self._outputs(comparison, (round_, turns), "")
                last_update = time.perf_counter()
                for index, event in replies:
                    live = replies.live[index]
                    first_words = isinstance(event, Chunk) and event.text == live.text != ""
                    now = time.perf_counter()
                    if now - last_update >= UPDATE_INTERVAL_S or \
                            not isinstance(event, Chunk) or first_words:
                        last_update = now
                        for pane, reply in enumerate(replies.live):
                            turns[pane] = live_turn(reply, self._shown_name(comparison, pane),
                                                    texts=self.texts)
                        yield self._outputs(comparison, (round_, turns), "")
            for index, live in enumerate(replies.live):
                turns[index] = live_turn(live, self._shown_name(comparison, index),
                                         texts=self.texts, cost=self.costs.reply(live))
                if live.error:
                    round_.errors[index] = live.error
                else:
                    round_.replies[index] = stored_reply(live)
        except (UnknownModel, ModelUnavailable) as exc:
            for index, turn in enumerate(turns):
                turn.error = round_.errors[index] = str(exc)
        except Exception as exc:  # noqa: BLE001 - never a traceback on the page
            log.exception("comparison round failed")
            for index, turn in enumerate(turns):
                turn.error = round_.errors[index] = self.texts("compare.unexpected_error",
                                                                detail=str(exc))
        finally:
            self.stops.end(key, cancel)
        comparison.rounds.append(round_)
        comparison.inspector = self._inspect(comparison, requests)
        yield self._outputs(comparison, (round_, turns), "", streaming=False)

    def _inspect(self, comparison: Comparison, requests: Sequence[ReplyRequest]) -> str:
        """Each pane's prompt after its chat template, and what ended its reply."""
        parts = []
        for index, request in enumerate(requests):
            model_id, params = request.model_id, request.params
            label = comparison.label(index, texts=self.texts)
            heading = f"### {label}: {self.model_name(model_id)}"
            if (hidden := prompt_hidden(self.manager, model_id, texts=self.texts)) is not None:
                parts.append(f"{heading}\n\n{hidden}")
                continue
            try:
                report, dropped = self.manager.inspect(model_id, request.messages, params,
                                                       request.grounding)
            except (UnknownModel, ModelUnavailable, BackendError) as exc:
                parts.append(f"{heading}\n\n⚠️ {exc}")
                continue
            details = inspector_details(self.model_name(model_id), report, params, dropped,
                                        texts=self.texts)
            parts.append(f"{heading}\n\n{details}\n\n{fenced(report.prompt)}")
        return "\n\n".join(parts)

    def _shown_name(self, comparison: Comparison, index: int) -> str:
        if not comparison.revealed:
            return comparison.label(index, texts=self.texts)
        return self.model_name(comparison.panes[index].model_id)

    # -- what the page shows -------------------------------------------------------------
    def _pane_messages(self, comparison: Comparison, index: int,
                       live: tuple[Round, list[Turn]] | None, streaming: bool) -> list[dict]:
        name_of = (lambda _: comparison.label(index, texts=self.texts)) \
            if not comparison.revealed \
            else self.model_name
        turns: list[Turn] = []
        for round_ in comparison.rounds:
            if live is not None and round_ is live[0]:
                continue
            turns.append(Turn("user", round_.prompt))
            reply = round_.replies[index]
            if round_.errors[index] or reply is None:
                turns.append(Turn("assistant", "", error=round_.errors[index]
                                  or self.texts("compare.no_reply")))
            else:
                turns += turns_from([reply], name_of, texts=self.texts)
        if live is not None:
            turns += [Turn("user", live[0].prompt), live[1][index]]
        return chatbot_messages(turns, streaming, hide_thoughts=not comparison.revealed,
                                texts=self.texts)

    def _outputs(self, comparison: Comparison | None, live, message,
                 streaming: bool = True) -> tuple:
        """Every pane's chat and title, the state, the message box, the vote row, and the
        pane model pickers: hidden while a blind comparison keeps its secret, set to the
        dealt models once the names are shown."""
        panes, pickers = [], []
        for index in range(MAX_PANES):
            if comparison is None or index >= len(comparison.panes):
                panes.append(gr.update(value=[], label=Comparison.label(index, texts=self.texts)))
                pickers.append(gr.update(visible=True))
                continue
            panes.append(gr.update(
                value=self._pane_messages(comparison, index, live, streaming),
                label=comparison.title(index, self.model_name, texts=self.texts)))
            pickers.append(gr.update(visible=False) if not comparison.revealed else
                           gr.update(visible=True, value=comparison.panes[index].model_id))
        voting = comparison is not None and comparison.can_vote and not streaming
        if comparison is None or not comparison.inspector:
            inspector = self.texts("compare.inspector_empty")
        elif not comparison.revealed:
            inspector = self.texts("compare.inspector_blind")
        else:
            inspector = comparison.inspector
        return (*panes, comparison, message, gr.update(visible=voting), *pickers, inspector)

    # -- controls ------------------------------------------------------------------------
    def stop(self, request: gr.Request) -> None:
        self.stops.stop(compare_key(request))

    def new_round(self, request: gr.Request) -> tuple:
        """Forget the comparison on the page (a saved one stays saved) and stop it."""
        self.stops.stop(compare_key(request))
        return (*self._outputs(None, None, "", streaming=False), "")

    def vote(self, outcome: str, comparison: Comparison | None, request: gr.Request,
             include_open: bool = True) -> tuple:
        """Keep the vote; the leaderboard comes back as the page asks (open votes or not)."""
        if comparison is None or not comparison.can_vote:
            return (*self._outputs(comparison, None, gr.update(), streaming=False),
                    self.texts("compare.vote_needs_round"), gr.update())
        vote = comparison.vote(outcome)
        self.votes.add(user_of(request), vote)
        texts = self.texts
        if vote.winner is None:
            said = texts("compare.said_tie" if outcome == "tie" else "compare.said_bad")
        else:
            winner = vote.panes[vote.winner].model
            said = texts("compare.said_better", label=Comparison.label(vote.winner, texts=texts),
                         model=self.model_name(winner))
        names = ", ".join(texts("compare.was", label=Comparison.label(i, texts=texts),
                                model=self.model_name(p.model_id))
                          for i, p in enumerate(comparison.panes))
        status = texts("compare.vote_saved_blind", said=said, names=names) if vote.blind \
            else texts("compare.vote_saved", said=said)
        return (*self._outputs(comparison, None, gr.update(), streaming=False), status,
                self.leaderboard_rows(request, bool(include_open)))

    # -- leaderboard and files -----------------------------------------------------------
    def standings(self, user: str, include_open: bool = True) -> list[Standing]:
        """The fit over the user's votes: every one, or only those cast blind."""
        return leaderboard(all_battles(self.votes.of(user, include_open)))

    def board(self, include_open: bool, request: gr.Request) -> tuple[list[list], str]:
        """The leaderboard with or without the open votes, and how many of each it counts."""
        counts = self.votes.counts(user_of(request))
        blind = self.texts("answer.blind_votes", n=counts.blind)
        open_ = self.texts("answer.open_votes", n=counts.open)
        line = self.texts("answer.counts" if include_open else "answer.counts_blind_only",
                          blind=blind, open=open_)
        return self.leaderboard_rows(request, bool(include_open)), line

    def leaderboard_rows(self, request: gr.Request, include_open: bool = True) -> list[list]:
        texts = self.texts
        return [[rank, self.model_name(s.model), round(s.rating),
                 texts("compare.interval", low=f"{s.low:.0f}", high=f"{s.high:.0f}")
                 if s.games >= MIN_GAMES_FOR_INTERVAL
                 else texts("compare.needs_votes", n=MIN_GAMES_FOR_INTERVAL),
                 f"{s.win_rate:.0%}", s.wins, s.losses, s.ties, s.games,
                 self.costs.cell(s.model)]
                for rank, s in enumerate(self.standings(user_of(request), include_open),
                                         start=1)]

    def api_leaderboard(self, request: gr.Request) -> list[dict]:
        """The caller's leaderboard, best first: model id, rating, interval, counts, and
        the cost per million output tokens (None while unknown) in `currency`."""
        rows = []
        for s in self.standings(user_of(request)):
            cost = self.costs.cost(s.model)
            known = cost is not None and cost.known
            rows.append({"model": s.model, "rating": s.rating, "low": s.low, "high": s.high,
                         "wins": s.wins, "losses": s.losses, "ties": s.ties,
                         "win_rate": s.win_rate,
                         "cost_per_million_output": cost.output_per_million if known else None,
                         "currency": cost.currency if known else None})
        return rows

    def export_votes(self, kind: str, request: gr.Request):
        votes = self.votes.of(user_of(request))
        if not votes:
            return gr.update(visible=False), self.texts("compare.no_votes")
        path = self._export_path(f"votes-{time.strftime('%Y%m%d-%H%M%S')}", kind)
        path.write_text(votes_to_csv(votes) if kind == "csv" else votes_to_json(votes),
                        encoding="utf-8")
        return gr.update(value=str(path), visible=True), \
            self.texts("compare.exported_votes", n=len(votes), file=path.name)

    def export_markdown(self, comparison: Comparison | None):
        if comparison is None or not comparison.rounds:
            return gr.update(visible=False), self.texts("compare.nothing_to_export")
        if not comparison.revealed:
            return gr.update(visible=False), self.texts("compare.export_blind")
        title = file_slug(comparison.rounds[0].prompt, "prompt")
        path = self._export_path(f"compare-{title}", "md")
        path.write_text(comparison.to_markdown(self.model_name), encoding="utf-8")
        return gr.update(value=str(path), visible=True), \
            self.texts("compare.exported", file=path.name)

    def save_conversations(self, comparison: Comparison | None, request: gr.Request) -> str:
        """One conversation per pane, each with the history that pane's model saw."""
        if comparison is None or not comparison.rounds:
            return self.texts("compare.nothing_to_save")
        if not comparison.revealed:
            return self.texts("compare.save_blind")
        user = user_of(request)
        saved = []
        for index, pane in enumerate(comparison.panes):
            messages = comparison.history(index)
            if not messages:
                continue
            title = f"{title_from(comparison.rounds[0].prompt)} ({self.model_name(pane.model_id)})"
            self.store.import_conversation(user, title, pane.model_id, comparison.system,
                                           pane.params.sampling.model_dump(), messages)
            saved.append(title)
        if not saved:
            return self.texts("compare.no_replies_to_save")
        return self.texts("compare.saved", n=len(saved),
                          titles="; ".join(f"“{t}”" for t in saved))

    def _export_path(self, stem: str, kind: str) -> Path:
        return self.exports.path(f"{stem}.{kind}")
