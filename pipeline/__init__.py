"""Batch image pipeline for Nano Banana Pro (gemini-3-pro-image-preview) and its resellers."""

__version__ = "0.1.0"
