"""End-to-end tests: real uWSGI behind real nginx, on loopback ports and temporary folders."""
