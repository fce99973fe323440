"""The unit tier: pure logic, no PostgreSQL, no Redis, no worker; runs in seconds."""
