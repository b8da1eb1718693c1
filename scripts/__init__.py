"""Release tools, apart from the benchmarks: each is run from the repository root as a module.

    python -m scripts.bundle_pretrained RUN --name digit --command "digitformer train ..."
    python -m scripts.screenshot --out docs/demo.png

`bundle_pretrained` stores a trained run as a bundled `pretrained:NAME` model with its test
report; `screenshot` draws digits on the demo page and saves the README's picture.
"""
