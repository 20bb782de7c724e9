"""What the Inspector says beside a prompt, in Chat and in Compare: why a model's exact
prompt cannot be shown, and the facts about one that can."""
from __future__ import annotations

import json

from backends.base import GenParams, PromptReport
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.i18n import Texts
from chatui.transcript import model_name

# Markdown code fences around the Inspector's thought and facts.
THOUGHT_FENCE = "````"
CODE_FENCE = "```"


def prompt_hidden(manager: ModelManager, model_id: str,
                  *, texts: Texts) -> str | None:
    """Why the Inspector cannot show this model's exact prompt, or None when it can."""
    try:
        engine = manager.engine(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return texts("chat.error", detail=str(exc))
    if engine.shows_prompt:
        return None
    return texts("chat.inspector.hidden", model=model_name(manager.registry, model_id))


def inspector_details(model_name: str, report: PromptReport, params: GenParams,
                      dropped: int, *, texts: Texts) -> str:
    """Where the chat template came from and how long the prompt is, then the facts as
    JSON (its keys stay English: they are data)."""
    facts = {"model": model_name, "template": report.template,
             "prompt_tokens": report.prompt_tokens, "stop_strings": list(report.stop_strings),
             "end_of_sequence_ids": list(report.eos_ids), "sampling": params.sampling.model_dump(),
             "messages_left_out": dropped}
    summary = texts("chat.inspector.summary", template=report.template,
                    tokens=str(report.prompt_tokens),
                    left_out=texts("chat.inspector.left_out", n=str(dropped)) if dropped else "")
    return (f"{summary}\n\n{CODE_FENCE}json\n{json.dumps(facts, indent=2, ensure_ascii=False)}"
            f"\n{CODE_FENCE}")
