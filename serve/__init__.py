"""Serving comcloak over HTTP (issue 15): the dynamic batcher first; the ASGI app and ``comcloak serve`` build on it."""
