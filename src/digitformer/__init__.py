"""digitformer: Vision Transformers that read handwritten digits.

import digitformer
reader = digitformer.load("digit")  # "grid", "number", "auto" (each picture by its layout),
                                    # or a run folder / checkpoint
print(reader.predict(["my_digit.png"])[0].digits)
"""

__version__ = "0.1.0"
__all__ = ["AutoReader", "Reader", "__version__", "load"]


def __getattr__(name: str):
    # The API loads PyTorch: only when it is used, so `import digitformer` stays instant.
    if name in ("load", "Reader", "AutoReader"):
        from digitformer.inference import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'digitformer' has no attribute {name!r}")
