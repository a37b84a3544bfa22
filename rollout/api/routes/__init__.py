"""The service's routers, one module per resource. `rollout.api.app` mounts them."""
