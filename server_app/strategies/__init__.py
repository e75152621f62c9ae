"""How the sites' updates become the next global model: a base strategy and the wrappers composed around it."""
