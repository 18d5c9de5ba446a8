"""HTTP endpoints, one module per group; they share the Services built by the app."""
