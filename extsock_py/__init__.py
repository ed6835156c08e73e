"""extsock_py: keeps an IPsec tunnel up across several gateways, next to charon."""

__version__ = "0.1.0"
