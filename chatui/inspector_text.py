"""What the Inspector says beside a prompt, in Chat and in Compare: why a model's exact
prompt cannot be shown, and the facts about one that can."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from backends.base import BackendError, GenParams, PromptReport
from backends.sampling import stored
from chatcore.conversations.store import NotFound
from chatcore.generation.context import with_system
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.replies import thought_title
from chatcore.i18n import Texts
from chatui.transcript import model_name

if TYPE_CHECKING:
    from chatui.chat_handlers import ChatHandlers

# Markdown code fences around the Inspector's thought and facts.
THOUGHT_FENCE = "````"
CODE_FENCE = "```"


def prompt_hidden(manager: ModelManager, model_id: str, *, texts: Texts,
                  name: str | None = None) -> str | None:
    """Why the Inspector cannot show this model's exact prompt, or None when it can
    (`name`: what to call the model, when not its own name)."""
    try:
        engine = manager.engine(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return texts("chat.error", detail=str(exc))
    if engine.shows_prompt:
        return None
    return texts("chat.inspector.hidden", model=name or model_name(manager.registry, model_id))


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


def last_reply_prompt(chat: ChatHandlers, user: str,
                      conversation_id: int | None) -> tuple[str, str]:
    """The prompt the last reply shown was generated from, exactly, with what ended it (its
    model said as "model hidden" while blind mode hides it)."""
    texts = chat.texts
    try:
        conversation = chat.store.get_conversation(user, conversation_id)
    except (NotFound, TypeError):
        return "", texts("chat.inspector.empty")
    replies = [i for i, m in enumerate(conversation.messages) if m.role == "assistant"]
    if not replies:
        return "", texts("chat.inspector.empty")
    reply = conversation.messages[replies[-1]]
    asked = conversation.messages[:replies[-1]]
    prompt = with_system(conversation.system_prompt, asked)
    params = GenParams(stored(reply.params))
    blind = reply.id in chat.preferences.hidden(user, conversation_id)
    name = texts("answer.hidden_model") if blind else chat.model_name(reply.model or "")
    if (hidden := prompt_hidden(chat.manager, reply.model or "", texts=texts,
                                name=name)) is not None:
        return "", hidden
    grounding = chat.conversations.grounding(user, conversation_id, asked)
    try:
        report, dropped = chat.manager.inspect(reply.model or "", prompt, params, grounding)
    except (UnknownModel, ModelUnavailable, BackendError) as exc:
        detail = str(exc).replace(reply.model, name) if blind and reply.model else str(exc)
        return "", texts("chat.error", detail=detail)
    details = inspector_details(name, report, params, dropped, texts=texts)
    if reply.thought:
        title = thought_title(reply.thought_seconds, reply.thought_tokens, texts=texts)
        lead = texts("chat.inspector.thought", title=title.lower())
        details += f"\n\n{lead}\n\n{THOUGHT_FENCE}text\n{reply.thought}\n{THOUGHT_FENCE}"
    return report.prompt, details
