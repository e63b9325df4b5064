"""Clients of the services whose APIs are big enough to need one: Node-RED's admin API and the OpenWhisk API.

(Smaller ones sit in the service's own module: `ToxiproxyClient`, `Mailbox`, `StoreAdmin`.)
"""
