"""Using a trained model: image sources, the predictor every front door shares, and its results."""
