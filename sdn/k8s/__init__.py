"""The Kubernetes side: the watched resources, informers over the official client, the
cluster state they feed, and a local API stand-in for tests and demos."""
