"""Simulation harness (`annoloop simulate`): the active-learning loop with simulated annotators,
run either through the engine directly or through a real API + worker. See README.md here."""
