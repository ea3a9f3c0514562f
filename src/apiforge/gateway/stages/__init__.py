"""Gateway stages, one module each; their order lives in `gateway/pipeline.py`."""
