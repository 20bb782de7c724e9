"""The Gradio page: handlers only; every model decision is the manager's."""
