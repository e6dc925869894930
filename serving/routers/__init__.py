"""The API's routers, one per concern, gathered by `serving.app`."""
