"""The Gradio page: handlers only; every model decision is the manager's."""
from chatui.gradio_import import skip_stub_rewrite

skip_stub_rewrite()  # before any page module imports Gradio: about a second of each start
