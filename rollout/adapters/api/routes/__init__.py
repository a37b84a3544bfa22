"""The service's routers, one module per resource. `rollout.adapters.api.app` mounts them."""
