"""The web UI: HTML pages and their JSON endpoints (controllers only; behaviour lives in services)."""
