"""Libraries behind the command-line tools (nouns; no flags parsed here)."""
