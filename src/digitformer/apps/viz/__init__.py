"""Pictures of what the models learned: embeddings, clusters, attention, Braille epochs, curves.

digitformer viz .data/models/encoder-decoder-default --samples 500
"""

PICTURES = ("tsne", "clusters", "attention", "braille", "curves", "confusion")
