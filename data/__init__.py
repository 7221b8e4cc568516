"""circuitkit's embedded data (installed as the package ``circuitkit.data``; see ``circuitkit/_paths.py``)."""
