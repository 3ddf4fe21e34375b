"""Model modules: backbone, FPN, the shared FCOS core and the methods built on it."""
