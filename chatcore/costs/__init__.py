"""What a token costs: the settings (watts, electricity price, currency, hardware), the
machine's power draw, the engines' measured time per token, and the cost they make."""
