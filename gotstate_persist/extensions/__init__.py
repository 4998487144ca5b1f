"""Extensions: registry, lifecycle, isolation and the four category protocols (placeholder)."""
