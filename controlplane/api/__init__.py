"""HTTP adapters: blueprints that parse a request, call a service and shape the answer."""
