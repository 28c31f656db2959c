"""Where the controller's cluster comes from: one typed protocol (`Source`, feeding a `Sink`)
and its two implementations, manifest files (`files.FileSource`) and the Kubernetes API
(`kubernetes.KubernetesSource`). The controller core never reads an input itself."""
