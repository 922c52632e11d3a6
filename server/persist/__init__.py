"""The message writer (group commit) and what runs after each commit."""
