"""HTTP layer: thin routers that parse requests, call a service and return a schema."""
