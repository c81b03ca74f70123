"""HTTP only: translates requests to Cache calls and results back to responses."""
