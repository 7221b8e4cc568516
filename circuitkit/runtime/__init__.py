"""The one room that runs models: loading, inputs, capture, interventions (see runtime/__init__ docs)."""
