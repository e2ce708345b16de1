"""A tenant module that ends the process as it is imported (DESIGN 9: contained all the same)."""

import sys

sys.exit("this module refuses to be imported")


def create_app(tenant_config: object) -> object:  # pragma: no cover - never reached
    raise AssertionError
