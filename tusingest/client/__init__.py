"""`tusingest upload`: a tus 1.0 client that knows the server only over HTTP."""
