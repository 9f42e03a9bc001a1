"""Song-data crawlers: HTTP layer, source clients, pure parsers, sample catalogue and its server."""
