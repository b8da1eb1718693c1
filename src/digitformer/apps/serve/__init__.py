"""The web demo and prediction API: `digitformer serve`."""
