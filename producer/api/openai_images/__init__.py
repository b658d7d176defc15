"""The OpenAI Images API, served beside imggen's own (switching a client is a change of base URL,
key and model name)."""
