"""The credential-injection proxy: a plain ASGI app mounted beside the API."""
