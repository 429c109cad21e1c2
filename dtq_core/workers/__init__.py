"""Worker pools: threads (default), processes and an asyncio loop, around one runner."""
