"""Deployment engine, service flow, stage flows and source discovery."""
