"""Where a routed request is sent: a local replica (Ray Serve handle) or a cloud provider."""
