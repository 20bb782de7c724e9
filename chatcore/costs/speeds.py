"""The engines' time per token, summed in the store per model, engine and device from every
finished reply (page, Compare, API, Evaluate: ModelManager.measure_with feeds it)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from chatcore.conversations.store import Store
from chatcore.generation.replies import Measured


@dataclass(frozen=True)
class Speed:
    """One model's measured totals on one engine and device."""

    model_id: str
    engine: str
    device: str
    replies: int
    prompt_tokens: int
    prompt_seconds: float
    output_tokens: int
    decode_seconds: float

    @property
    def seconds_per_output_token(self) -> float | None:
        return self.decode_seconds / self.output_tokens if self.output_tokens else None

    @property
    def seconds_per_input_token(self) -> float | None:
        return self.prompt_seconds / self.prompt_tokens if self.prompt_tokens else None

    @property
    def output_tokens_per_second(self) -> float | None:
        return self.output_tokens / self.decode_seconds if self.decode_seconds > 0 else None


class SpeedBook:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, measured: Measured) -> None:
        """Add one reply's times to its model's totals (the manager's listener)."""
        m = measured
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO reply_speeds (model, engine, device, replies, prompt_tokens,"
                " prompt_seconds, output_tokens, decode_seconds, updated)"
                " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) ON CONFLICT (model, engine, device) DO"
                " UPDATE SET replies = replies + 1,"
                " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                " prompt_seconds = prompt_seconds + excluded.prompt_seconds,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " decode_seconds = decode_seconds + excluded.decode_seconds,"
                " updated = excluded.updated",
                (m.model_id, m.engine, m.device, m.prompt_tokens if m.prompt_tokens else 0,
                 m.prompt_seconds if m.prompt_tokens else 0.0, m.output_tokens,
                 m.decode_seconds, time.time()))

    def speed(self, model_id: str, engine: str) -> Speed | None:
        """The model's totals on `engine` (its entry's now), on the device it answered most
        replies on; None before its first measured reply."""
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT model, engine, device, replies, prompt_tokens, prompt_seconds,"
                " output_tokens, decode_seconds FROM reply_speeds WHERE model = ? AND"
                " engine = ? ORDER BY replies DESC, updated DESC LIMIT 1",
                (model_id, engine)).fetchone()
        return Speed(*row) if row else None
