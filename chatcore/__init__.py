"""The UI-free core, in rooms by subject; a room imports only from rooms listed before it:

i18n           the words a person reads, in English and Filipino
documents      attached files read within bounds, their passages ranked
generation     the model registry, weights, loading within memory, the fair line, a reply
conversations  the SQLite store and the chat use case: send, regenerate, edit, continue
library        models found on disk and on the Hub, their fit, downloads
costs          what a token costs: watts, price, measured time per token
compare        side by side, votes, the one rating fit
evaluate       prompt sets, runs, review, the judge, the report
api            the /v1 API, sign-in, the request guard
"""
