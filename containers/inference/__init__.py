"""The SageMaker real-time endpoint's handler (``inference.py``) and its container (``Dockerfile``)."""
