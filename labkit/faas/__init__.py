"""labkit's own OpenWhisk-compatible FaaS runner and client.

Run the service with ``python -m labkit.faas --data-dir DIR`` (auth from
``LABKIT_FAAS_AUTH``); talk to it, or to a real OpenWhisk, with
:class:`OpenWhiskClient`. Importing this package does not pull in the server
dependencies.
"""

from labkit.faas.client import FaasError, OpenWhiskClient

__all__ = ["FaasError", "OpenWhiskClient"]
