"""Shared test harness: throwaway redis-server processes and worker processes."""
