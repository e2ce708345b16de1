"""The factory-built Flask apps that tenants run, one package per app (``tenants.notes`` ...)."""
