"""The optforge HTTP service: JSON API under /v1 and the web pages."""
