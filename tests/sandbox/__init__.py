"""Tests of the provider sandbox (pipeline/sandbox), over real HTTP and with the official SDKs."""
