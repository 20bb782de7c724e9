"""The page's own CSS (tables, badges, Compare's pane titles), which Gradio's theme leaves
to the app."""
from __future__ import annotations

# Table headers wrap between words only ("Estimated", never "Estimate d"), in every table
# and both languages; fit badges are words in coloured boxes (library_handlers.fit_badge).
STYLES_CSS = """
.gradio-container th, .gradio-container th * {
  word-break: keep-all !important; overflow-wrap: normal !important; hyphens: manual;
}
.fit-badge {
  display: inline-block; padding: 0 0.5em; border-radius: 0.6em; font-weight: 600;
  white-space: nowrap; border: 1px solid currentColor;
}
.fit-fits { color: #166534; background: #dcfce7; }
.fit-tight { color: #854d0e; background: #fef9c3; }
.fit-wont_fit { color: #991b1b; background: #fee2e2; }
/* Compare's pane titles sit above the messages, never over the question (a long model
   name wraps to two lines in a narrow pane). */
[id^='compare-pane-'] [data-testid='block-label'].float {
  position: static; margin-bottom: var(--size-2);
}
"""
