"""The ML core: models, training, acquisition strategies, label cleaning.

Plain PyTorch and NumPy only — nothing here imports the web app, the database or Celery,
so every piece can be tested and benchmarked on tensors alone.
"""
