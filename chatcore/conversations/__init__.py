"""Chat conversations and the one SQLite database: what is stored, when, where in the message tree; attachments, export and import, presets."""
