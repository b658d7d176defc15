"""The AUTOMATIC1111 web UI API, served beside imggen's own (switching a client is a change of
base URL and credentials)."""
