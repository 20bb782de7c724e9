"""The HTTP side: the OpenAI-compatible /v1 API, sign-in credentials, and the guard every request passes."""
