"""The JSON API (``/api/v1``): views, request checks and answer shapes, and its OpenAPI document."""
