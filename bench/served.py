"""What users see: the app and llama-server side by side in one run, each spoken to over
HTTP the way users' clients speak (threads in this process, each with its own httpx
connection, streaming /v1/chat/completions), on five workloads:

- rounds: after four solo requests, paired rounds of 4 clients at once and of 1 client,
  the two servers taking turns to go first, so neither always gets a warmer machine;
- a document: a ~1,700-token document asked in a new request, asked again with another
  question, again after other chats, and by a second signed-in user (who must not get the
  first user's prompt cache: the app runs with --auth, and each user signs in with HTTP
  Basic);
- long contexts: decode speed after the document against after a short prompt;
- a 10-turn conversation: the first token of each turn;
- speculative decoding: a quoting task on the app's entry with prompt lookup and on the
  same GGUF with it off; the text must be the same, the acceptance rate is printed.

The app serves the shipped SmolLM2 entry with 4 slots; llama-server (the anchor, when
$LLAMA_SERVER names it) serves the same GGUF with 4 slots of the same context.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from bench import concurrency
from bench.common import (
    MODEL,
    PROMPTS,
    ROOT,
    AppProcess,
    api_reply,
    median,
    smollm2_gguf,
)
from bench.llama_server import ENV, HOW_TO, LlamaServer

log = logging.getLogger(__name__)

PLAIN = "smollm2-135m-no-lookup"  # the shipped entry with prompt lookup off
# alice asks everything; bob is the second user of the document; carol runs the quoting
# task, so both entries start it with no saved prompt state (a prompt restored from a state
# read in other chunks can differ in the last bits, and so can a greedy reply's tokens).
USERS = (("alice", "bench-alice"), ("bob", "bench-bob"), ("carol", "bench-carol"))
DOCUMENT_TOKENS = 1700
QUESTIONS = ("Write a long story about the ships in the records above.",
             "Which goods came to the harbour most often? Explain in detail.",
             "Describe the town and its harbour, using the records above.")
TOPICS = ("dragons", "the sea", "mountains", "robots", "gardens", "music", "trains", "winter",
          "bees", "clocks")
SHIPS = ("Aurora", "Balangay", "Perla", "Santa Ines", "Hiraya", "Dagat", "Marilag", "Tala")
GOODS = ("rice", "salt", "abaca rope", "coffee", "dried fish", "coconut oil", "tobacco",
         "cacao", "indigo", "sugar", "timber", "cotton cloth")
PLACES = ("Cebu", "Iloilo", "Manila", "Vigan", "Zamboanga", "Batangas", "Legazpi", "Ormoc",
          "Dumaguete", "Tacloban", "Calbayog")
EVENTS = ("the wind turned before noon", "two sailors fell ill with fever",
          "the harbour master argued about the tax", "a child was born on board",
          "the cargo was wet and sold cheaply", "the bell of the church rang for an hour",
          "a storm kept the ship at anchor for three days", "the price of rice rose again",
          "the crew sang all night on the pier", "a letter arrived for the mayor")


@dataclass(frozen=True)
class Target:
    """One server as a client sees it: where, which model name, and how to sign in."""

    name: str
    url: str
    model: str
    auth: tuple[str, str] | None = None

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        return httpx.Client(auth=auth or self.auth)


def records(count_tokens: Callable[[str], int], target: int) -> str:
    """A harbour's records, entry after entry, until the text holds `target` tokens:
    varied enough to read as a document, the same in every run."""
    lines = ["The harbour records of the town of Malvar, as its clerk kept them."]
    entry = 0
    while count_tokens("\n".join(lines)) < target:
        lines.append(
            f"Entry {entry + 1}. In the spring of {1850 + entry}, the ship "
            f"{SHIPS[entry % len(SHIPS)]} brought {12 + entry * 7 % 88} barrels of "
            f"{GOODS[entry * 5 % len(GOODS)]} from {PLACES[entry * 3 % len(PLACES)]}, and the "
            f"clerk noted that {EVENTS[entry * 7 % len(EVENTS)]}.")
        entry += 1
    return "\n".join(lines)


def token_counter() -> Callable[[str], int]:
    """SmolLM2's own tokenizer, without its weights or a context."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    from backends.llamacpp_log import route_to_python_logging

    route_to_python_logging(llama_cpp)  # its log lines are not the report's
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    vocab = LlamaModel(path_model=str(smollm2_gguf()), params=params, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def ask(target: Target, messages: list[dict], max_tokens: int, model: str | None = None,
        auth: tuple[str, str] | None = None) -> dict:
    with target.client(auth) as http:
        reply = api_reply(http, target.url, messages, max_tokens, model or target.model)
    details = reply.usage.get("prompt_tokens_details") or {}
    return {"time_to_first_token_s": reply.timing.time_to_first_token,
            "tokens_per_second": reply.timing.tokens_per_second,
            "tokens": reply.timing.tokens, "prompt_tokens": reply.usage.get("prompt_tokens"),
            "cached_tokens": details.get("cached_tokens"), "usage": reply.usage,
            "text": reply.text}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def rounds(targets: list[Target], count: int, max_tokens: int) -> list[dict]:
    """Four solo requests each, then `count` paired rounds of 4 clients and of 1 client."""
    for target in targets:
        for index in range(4):
            ask(target, user(concurrency.prompt_for(index)), max_tokens)
    out = []
    for number in range(count):
        order = targets if number % 2 == 0 else targets[::-1]
        row: dict = {"first": order[0].name}
        for target in order:
            row[target.name] = {
                "four": concurrency.clients(target.url, 4, max_tokens, target.model,
                                            target.auth),
                "one": concurrency.clients(target.url, 1, max_tokens, target.model,
                                           target.auth)}
        out.append(row)
    return out


def document(target: Target, text: str, max_tokens: int, second_user: bool) -> dict:
    """The document in new requests: first, again, after other chats, and (on the app) as
    the second user."""
    asked = lambda question, **kw: ask(  # noqa: E731
        target, user(f"{text}\n\n{question}"), max_tokens, **kw)
    out = {"first": asked(QUESTIONS[0]), "again": asked(QUESTIONS[1])}
    for index in range(3):
        ask(target, user(PROMPTS[index + 4]), max_tokens)
    out["after_other_chats"] = asked(QUESTIONS[2])
    if second_user:
        out["second_user"] = asked(QUESTIONS[0], auth=USERS[1])
    return out


def short_decode(target: Target, max_tokens: int, runs: int = 3) -> float | None:
    return median([ask(target, user(PROMPTS[index]), max_tokens)["tokens_per_second"]
                   for index in range(runs)])


def conversation(target: Target, turns: int, max_tokens: int) -> list[float]:
    history: list[dict] = []
    firsts = []
    for turn in range(turns):
        history.append({"role": "user", "content": f"Tell me something about {TOPICS[turn]}."})
        reply = ask(target, history, max_tokens)
        history.append({"role": "assistant", "content": reply["text"]})
        firsts.append(reply["time_to_first_token_s"])
    return firsts


def speculative(app: Target, passage: str, max_tokens: int, runs: int) -> dict:
    """The quoting task on the shipped entry (prompt lookup) and on the plain one."""
    prompt = user(f"Copy the following records exactly, word for word:\n\n{passage}")
    ways: dict[str, list[dict]] = {MODEL: [], PLAIN: []}
    for _ in range(runs):
        for model in ways:
            ways[model].append(ask(app, prompt, max_tokens, model=model, auth=USERS[2]))
    looked, plain = ways[MODEL], ways[PLAIN]
    details = [(r["usage"].get("completion_tokens_details") or {}) for r in looked]
    accepted = sum(d.get("accepted_prediction_tokens") or 0 for d in details)
    rejected = sum(d.get("rejected_prediction_tokens") or 0 for d in details)
    lookup_rate = median([r["tokens_per_second"] for r in looked])
    plain_rate = median([r["tokens_per_second"] for r in plain])
    return {"runs": runs, "max_tokens": max_tokens,
            "tokens": [r["tokens"] for r in looked],
            "lookup_tokens_per_second": lookup_rate, "plain_tokens_per_second": plain_rate,
            "speedup": lookup_rate / plain_rate if lookup_rate and plain_rate else None,
            "same_text": all(a["text"] == b["text"] for a, b in zip(looked, plain)),
            "accepted": accepted, "drafted": accepted + rejected,
            "acceptance": accepted / (accepted + rejected) if accepted + rejected else None}


def app_models(directory: Path) -> Path:
    """The shipped SmolLM2 entry with 4 slots, and the same GGUF with prompt lookup off."""
    shipped = yaml.safe_load((ROOT / "models.yaml").read_text(encoding="utf-8"))["models"]
    entry = dict(next(e for e in shipped if e["id"] == MODEL), parallel=4)
    plain = dict(entry, id=PLAIN, name=f"{entry['name']} without prompt lookup",
                 speculative="off")
    path = directory / "models-served.yaml"
    path.write_text(yaml.safe_dump({"models": [entry, plain]}, sort_keys=False),
                    encoding="utf-8")
    return path


def run(quick: bool) -> dict:
    tokens = 16 if quick else 96
    count = token_counter()
    text = records(count, 300 if quick else DOCUMENT_TOKENS)
    passage = records(count, 120 if quick else 300)
    binary = os.environ.get(ENV, "").strip()
    anchor = {"run": False, "why": f"{ENV} is not set ({HOW_TO})"}
    with tempfile.TemporaryDirectory(prefix="bench-served-") as directory:
        users = Path(directory) / "users"
        users.write_text("".join(f"{name}:{secret}\n" for name, secret in USERS))
        users.chmod(0o600)
        with AppProcess(["--models", str(app_models(Path(directory))),
                         "--auth-file", str(users)]) as process:
            app = Target("app", process.url, MODEL, USERS[0])
            targets = [app]
            server = None
            if binary:
                try:
                    server = LlamaServer(binary, smollm2_gguf())
                    targets.append(Target("llama-server", server.url, "smollm2"))
                    anchor = {"run": True, "command": " ".join(
                        Path(part).name if i in (0, 2) else part
                        for i, part in enumerate(server.command))}
                except (RuntimeError, OSError) as exc:
                    anchor = {"run": False, "why": f"llama-server at {binary} failed: {exc}"}
            try:
                out = {"anchor": anchor, "max_tokens": tokens,
                       "document_tokens": count(text),
                       "rounds": rounds(targets, 1 if quick else 5, tokens)}
                for target in targets:
                    out[target.name] = {
                        "short_decode_tokens_per_second": short_decode(target, tokens),
                        "document": document(target, text, tokens, target is app),
                        "conversation_first_token_s": conversation(
                            target, 3 if quick else 10, 16 if quick else 48)}
                out["speculative"] = speculative(app, passage, 64 if quick else 320,
                                                 1 if quick else 3)
            finally:
                if server is not None:
                    server.close()
    for target in targets:  # the texts were for comparing; the report keeps figures
        for reply in out[target.name]["document"].values():
            reply.pop("text", None)
            reply.pop("usage", None)
    return out
