"""labkit: stand up, drive and measure the DIT247 event-driven image pipeline lab."""

__version__ = "0.1.0"
