"""Chat conversations and the one SQLite database: what is stored, when, what supersedes what; attachments, export and import, presets."""
