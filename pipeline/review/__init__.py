"""Reviewing a run: approve or reject images (with a note), edit a prompt, regenerate what was rejected with
the old image kept as history, export the approved set. Plain functions; the CLI and the web app call them."""
