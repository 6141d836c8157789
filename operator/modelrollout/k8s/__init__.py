"""The only code that talks to the Kubernetes API server, and pure manifest builders."""
