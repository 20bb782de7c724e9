"""Side by side: panes answering the same prompts, votes on them, and the one Bradley-Terry rating fit."""
