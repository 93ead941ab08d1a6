"""One module per component of the local stack, each a `Component` subclass."""
