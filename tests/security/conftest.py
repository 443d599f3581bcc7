"""The security tests run real clusters with the fault suite's private services."""

from tests.faults.conftest import bucket, fault_pg_url, private_pg, private_redis

__all__ = ["bucket", "fault_pg_url", "private_pg", "private_redis"]
