"""Small apps the behaviour tests run workers on (queue and Redis from the environment)."""
