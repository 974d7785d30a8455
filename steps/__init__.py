"""The code each pipeline step runs: plain, typed Python that knows nothing of SageMaker."""
