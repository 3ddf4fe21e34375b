"""Pure tensor functions (no config), each with a reference test."""
