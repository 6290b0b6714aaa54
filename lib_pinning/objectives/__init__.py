"""Image objectives: batched FLIP, pinning losses, penalties."""
