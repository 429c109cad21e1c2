"""Modal screens: confirmations, prompts, the help, the args editor and the replay preview."""
