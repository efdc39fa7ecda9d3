"""The HTTP API's routers, one module per resource; ``service.app`` assembles them."""
