"""Processing steps: plain functions run on Dask workers, one raw file at a time."""
