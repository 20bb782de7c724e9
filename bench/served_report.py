"""The figures of bench/served.py, for the report and its targets: ratios are taken within
one round or one run, never across runs."""
from __future__ import annotations

from bench.common import median

SERVER = "llama-server"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _x(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def round_ratios(served: dict) -> list[float]:
    """Each round's 4-client aggregate: the app's over llama-server's."""
    if not served["anchor"]["run"]:
        return []
    return [row["app"]["four"]["aggregate_tokens_per_second"]
            / row[SERVER]["four"]["aggregate_tokens_per_second"] for row in served["rounds"]]


def four_over_one(served: dict, name: str = "app") -> float | None:
    return median([row[name]["four"]["aggregate_tokens_per_second"]
                   / row[name]["one"]["aggregate_tokens_per_second"]
                   for row in served["rounds"]])


def slowest_first_token(served: dict, name: str = "app") -> float | None:
    firsts = [t for row in served["rounds"] for t in row[name]["four"]["time_to_first_token_s"]]
    return None if not firsts or None in firsts else max(firsts)


def long_over_short(served: dict, name: str = "app") -> float | None:
    side = served[name]
    return _ratio(side["document"]["first"]["tokens_per_second"],
                  side["short_decode_tokens_per_second"])


def long_over_server(served: dict) -> float | None:
    if not served["anchor"]["run"]:
        return None
    return _ratio(served["app"]["document"]["first"]["tokens_per_second"],
                  served[SERVER]["document"]["first"]["tokens_per_second"])


def last_turn_over_first(served: dict, name: str = "app") -> float | None:
    firsts = served[name]["conversation_first_token_s"]
    return _ratio(firsts[-1], firsts[0])


def lines(served: dict) -> list[str]:
    names = ["app"] + ([SERVER] if served["anchor"]["run"] else [])
    anchor = served["anchor"]
    out = ["", "**What users see** (bench/served.py: clients streaming /v1 over HTTP with "
           "httpx, one connection each, the app and llama-server side by side in one run; "
           f"greedy, {served['max_tokens']} tokens)", "",
           f"Anchor: `{anchor['command']}`." if anchor["run"]
           else f"Anchor not run: {anchor['why']}.", "",
           "| round | first | " + " | ".join(f"{n}: 4 clients tok/s | {n}: 1 client tok/s"
                                            for n in names)
           + (" | app / llama-server |" if len(names) > 1 else " |"),
           "|---|---|" + "---|---|" * len(names) + ("---|" if len(names) > 1 else "")]
    ratios = round_ratios(served)
    for number, row in enumerate(served["rounds"]):
        cells = [f"{row[n]['four']['aggregate_tokens_per_second']:.1f} | "
                 f"{row[n]['one']['aggregate_tokens_per_second']:.1f}" for n in names]
        out.append(f"| {number + 1} | {row['first']} | " + " | ".join(cells)
                   + (f" | {ratios[number]:.2f} |" if ratios else " |"))
    out += ["", "4 clients over 1 client (median of rounds): " + ", ".join(
        f"{n} {_x(four_over_one(served, n))}" for n in names) + "; slowest first token of 4: "
        + ", ".join(f"{n} {_ms(slowest_first_token(served, n))}" for n in names) + ".",
        "", f"A {served['document_tokens']}-token document in new requests (first token; "
        "cached prompt tokens as the server reported them):", "",
        "| request | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    labels = {"first": "first question", "again": "another question",
              "after_other_chats": "again after 3 other chats",
              "second_user": "the first question, as a second signed-in user"}
    for key, label in labels.items():
        cells = []
        for n in names:
            reply = served[n]["document"].get(key)
            cells.append("—" if reply is None else f"{_ms(reply['time_to_first_token_s'])} "
                         f"({reply['cached_tokens'] if reply['cached_tokens'] is not None else '?'}"
                         " cached)")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "Decode after the document over after a short prompt: " + ", ".join(
        f"{n} {_x(long_over_short(served, n))} "
        f"({_x(served[n]['document']['first']['tokens_per_second'], 1)} against "
        f"{_x(served[n]['short_decode_tokens_per_second'], 1)} tok/s)" for n in names) + "."]
    if served["anchor"]["run"]:
        out[-1] += f" The app's over llama-server's after the document: " \
                   f"{_x(long_over_server(served))}."
    out += ["", f"A {len(served['app']['conversation_first_token_s'])}-turn conversation, "
            "first token of the last turn over the first: " + ", ".join(
                f"{n} {_x(last_turn_over_first(served, n))}" for n in names) + "."]
    s = served["speculative"]
    out += ["", f"Speculative decoding (prompt lookup) on a quoting task ({s['runs']} runs, up "
            f"to {s['max_tokens']} tokens): {_x(s['lookup_tokens_per_second'], 1)} tok/s "
            f"against {_x(s['plain_tokens_per_second'], 1)} without, {_x(s['speedup'])}×; "
            f"{s['accepted']} of {s['drafted']} drafted tokens accepted "
            f"({_x(None if s['acceptance'] is None else s['acceptance'] * 100, 0)}%); greedy "
            f"text {'identical' if s['same_text'] else 'DIFFERENT'}."]
    return out
