"""Container and Lambda entry points: thin adapters from /opt/ml/processing paths and events to steps/."""
