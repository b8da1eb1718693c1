"""An independent evaluation suite for digitformer's readers.

Written without looking at (or importing) the project's own data generators: its digit sources
(`digits`), its number-line layouts (`numbers`) and its runner (`evaluate`) are all new code. The
only project code it calls is the public API, `digitformer.load(...).predict(...)`.

    python -m benchmarks.independent.evaluate --reader both --json OUT.json
"""
