"""The HANet search service: settings, command line, and (later) the HTTP API."""
